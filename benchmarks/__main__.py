"""python -m benchmarks {run,report}"""
from __future__ import annotations

from pathlib import Path

from models.cli import ArgumentParser, console, positive_int, run
from models.errors import UserError


def _run(args):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from models import registry

    from . import executor, report, runtimes, variants
    from .runner import Method
    from .store import Store
    from .sweep import Sweep, SweepConfig

    names = args.models or registry.names()
    for n in names:
        registry.get(n)
    for v in args.variants or []:
        variants.by_name(v)
    for r in args.runtimes or []:
        runtimes.by_name(r)
    quick = args.quick
    batches = [positive_int(b, "--batch") for b in args.batch] if args.batch else ([1] if quick else [1, 32])
    threads = ([positive_int(t, "--threads") for t in args.threads] if args.threads
               else [SweepConfig([]).threads[-1]] if quick else SweepConfig([]).threads)
    cfg = SweepConfig(models=names, method=Method.quick() if quick else Method(), out=Path(args.out),
                      cache=args.cache_dir, fresh=args.fresh, tiny=args.tiny, reuse_metric=quick,
                      batches=batches, threads=threads)
    if args.variants:
        cfg.variants = args.variants
    if args.runtimes:
        cfg.runtimes = args.runtimes
    out = console(stderr=args.json)
    execute = executor.make(args.executor, address=args.address, on=args.on)  # before any training: fail fast
    for r in runtimes.RUNTIMES:
        reason = r.unavailable()
        out.print(f"runtime {r.name}: {'available' if reason is None else 'not available: ' + reason}")
    from .runtimes.onnxruntime import build_line

    out.print(build_line())
    store = Store(cfg.out / "results.db")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=False) as progress:
        task = progress.add_task("sweep", total=None)
        sweep = Sweep(cfg, store, on_step=lambda text: progress.update(task, description=text), executor=execute)
        progress.update(task, total=len(sweep.plan()))
        measured = sweep.run(advance=lambda: progress.advance(task))
        progress.update(task, description="sweep done")
    rows = store.rows(names)
    paths = report.write(rows, cfg.out)
    out.print(f"{measured} new measurement(s); {len(rows)} row(s) in {store.path}")
    for w in report.slower_quantized(rows):
        out.print(f"[yellow]WARNING[/]: {w}")
    out.print("report: " + ", ".join(str(p) for p in paths))
    if args.json:
        import json

        print(json.dumps(rows, indent=1, default=str))


def _report(args):
    from . import report

    db = Path(args.out) / "results.db"
    if not db.exists():
        raise UserError(f"no results store at {db}; run `python -m benchmarks run` first")
    rows = _store_at(str(db)).rows(args.models)
    paths = report.write(rows, Path(args.out))
    console().print("report: " + ", ".join(str(p) for p in paths))


def _store_at(path: str):
    from .store import Store

    p = Path(path)
    db = p / "results.db" if p.is_dir() else p
    if not db.exists():
        raise UserError(f"no results store at {db}")
    return Store(db, create=False)


def _compare(args):
    from .compare import compare

    changes = compare(_store_at(args.old).rows(), _store_at(args.new).rows())
    out = console()
    if not changes:
        out.print("no regressions beyond noise")
        return 0
    for c in changes:
        out.print(f"REGRESSION ({c.kind}): {c.describe()}")
    return 1


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks", description="Latency and accuracy across runtimes.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="measure every model x variant x runtime (resumes finished rows)")
    p.add_argument("--models", nargs="+", default=None, help="zoo names (default: all)")
    p.add_argument("--variants", nargs="+", default=None)
    p.add_argument("--runtimes", nargs="+", default=None)
    p.add_argument("--batch", nargs="+", default=None, help="batch sizes (default 1)")
    p.add_argument("--threads", nargs="+", default=None, help="thread counts (default: all cores)")
    p.add_argument("--quick", action="store_true",
                   help="shorter warm-up and timed runs, batch 1, all cores; a runtime whose outputs match another's "
                        "on the same file (checked on 32 test inputs) reuses its metric")
    p.add_argument("--fresh", action="store_true", help="measure again even if the store has the row")
    p.add_argument("--tiny", action="store_true", help="use the zoo's tiny configurations (smoke test)")
    p.add_argument("--out", default="results", help="directory for results.db and the report")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the rows of this sweep as JSON on stdout")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="where timed measurements run: worker processes here (default) or a Ray cluster")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: RAY_ADDRESS, else a private one on 127.0.0.1)")
    p.add_argument("--on", default=None, metavar="LABEL",
                   help="with --executor ray: measure only on nodes with this Ray resource or label (key or key=value)")
    p.set_defaults(fn=_run)
    p = sub.add_parser("compare", help="flag regressions of NEW against OLD (result dirs or .db files); exit 1 if any")
    p.add_argument("old")
    p.add_argument("new")
    p.set_defaults(fn=_compare)
    p = sub.add_parser("report", help="write report.md, report.html and results.json from the store")
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--out", default="results")
    p.set_defaults(fn=_report)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(run(main))
