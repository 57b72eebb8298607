"""python -m models {list,train}"""
from __future__ import annotations

from models import registry
from models.cli import ArgumentParser, console, run


def _list(args):
    from rich.table import Table  # deferred: only this subcommand needs it (CLI start-up)

    table = Table(title="model zoo")
    for col in ("name", "seed", "task", "metric", "bar", "inputs"):
        table.add_column(col)
    for spec in registry.specs():
        sig = ", ".join(f"{s.name}{list(s.shape)}" for s in spec.input_signature(spec.resolve_config(tiny=True)))
        direction = ">=" if spec.metric.higher_is_better else "<="
        table.add_row(spec.name, spec.seed_doc, spec.task, spec.metric.name, f"{direction} {spec.quality_bar:g}", sig)
    console().print(table)


def _train(args):
    from models.training import train  # deferred: models.training loads TensorFlow

    out = console()
    status = 0
    for name in args.names:
        spec = registry.get(name)
        with out.status(f"training {name}..."):
            result = train(spec, tiny=args.tiny, seed=args.seed, cache=args.cache_dir, force=args.force)
        verdict = "meets" if result.meets_bar else "MISSES"
        direction = ">=" if spec.metric.higher_is_better else "<="
        how = "cached" if result.from_cache else f"trained in {result.train_seconds:.1f}s"
        out.print(f"{name}: {spec.metric.name} = {result.metric:.4f} ({verdict} bar {direction} {spec.quality_bar:g}); "
                  f"{how} -> {result.path}")
        if not result.meets_bar and not args.tiny:
            status = 1
    return status


def main(argv=None):
    parser = ArgumentParser(prog="python -m models", description="The reference model zoo.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the registry as a table").set_defaults(fn=_list)
    p = sub.add_parser("train", help="train (or reuse from the cache) and save .keras + JSON sidecar")
    p.add_argument("names", nargs="+", metavar="NAME", help="zoo model name(s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="use the tiny test configuration")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(fn=_train)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(run(main))
