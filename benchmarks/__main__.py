"""python -m benchmarks {run,report,compare,profile}"""
from __future__ import annotations

import time
from pathlib import Path

from models.artifacts import claim_output_dir, claim_output_file
from models.cli import ArgumentParser, console, input_paths, positive_int, run
from models.errors import UserError

RUN_OUTPUTS = ("results.db", "report.md", "report.html", "results.json", "phases.json")  # what `run` writes in --out


def _run(args):
    from models import registry  # deferred: only this subcommand needs it (CLI start-up)

    from benchmarks import runtimes, variants  # deferred: only this subcommand needs it (CLI start-up)
    from benchmarks import executors  # deferred: only this subcommand needs it (CLI start-up)
    from benchmarks.report import console as summary  # deferred: only this subcommand needs it (CLI start-up)
    from benchmarks.report import markdown as report  # deferred: only this subcommand needs it (CLI start-up)
    from benchmarks.runner import Method  # deferred: only this subcommand needs it (CLI start-up)
    from benchmarks.store import Store  # deferred: only this subcommand needs it (CLI start-up)
    from benchmarks.sweep import Sweep, SweepConfig  # deferred: only this subcommand needs it (CLI start-up)

    from models.loading import _looks_like_path  # deferred: only this subcommand needs it (CLI start-up)

    names = args.models or registry.names()
    for n in names:
        if not (n not in registry.names() and _looks_like_path(n)):
            registry.get(n)  # "unknown model ...; valid: ..."
        elif not Path(n).exists():
            raise UserError(f"no such model file: {n}")
    for v in args.variants or []:
        variants.by_name(v)
    for r in args.runtimes or []:
        runtimes.by_name(r)
    quick = args.quick
    batches = [positive_int(b, "--batch") for b in args.batch] if args.batch else ([1] if quick else [1, 32])
    threads = ([positive_int(t, "--threads") for t in args.threads] if args.threads
               else [SweepConfig([]).threads[-1]] if quick else SweepConfig([]).threads)
    claim_output_dir(args.out, RUN_OUTPUTS, "benchmarks run", input_paths(args), take=False)  # before any work
    cfg = SweepConfig(models=names, method=Method.quick() if quick else Method(), out=Path(args.out),
                      cache=args.cache_dir, fresh=args.fresh, tiny=args.tiny, reuse_metric=quick,
                      batches=batches, threads=threads,
                      source={k: getattr(args, k) for k in ("data", "eval_data", "metric", "label", "custom_objects",
                                                            "unsafe") if getattr(args, k, None)})
    if args.variants or quick:
        cfg.variants = args.variants or variants.QUICK
    if args.runtimes or quick:
        cfg.runtimes = args.runtimes or runtimes.QUICK
    out = console(stderr=args.json)
    if quick:
        left = ([v.name for v in variants.VARIANTS if v.name not in cfg.variants]
                + [r.name for r in runtimes.RUNTIMES if r.name not in cfg.runtimes])
        if left:
            out.print(f"--quick leaves out {', '.join(left)} (the full sweep has them; --variants/--runtimes name "
                      "any)")
    execute = executors.make(args.executor, address=args.address, on=args.on)  # before any training: fail fast
    for r in runtimes.RUNTIMES:
        reason = r.unavailable()
        out.print(f"runtime {r.name}: {'available' if reason is None else 'not available: ' + reason}")
    from benchmarks.runtimes.onnxruntime import build_line  # deferred: only this subcommand needs it (CLI start-up)

    out.print(build_line())
    claim_output_dir(cfg.out, RUN_OUTPUTS, "benchmarks run", input_paths(args))
    store = Store(cfg.out / "results.db")
    def write_report(model):  # after each model: an interrupted sweep still leaves a readable report
        report.write(sweep.rows(), cfg.out, cfg.cache)

    def finished(model):
        write_report(model)
        shown.model_done(model, sweep.stored)

    sweep = Sweep(cfg, store, on_step=lambda text: shown.step(text), executor=execute, on_model=finished)
    plan = sweep.plan()
    # in a terminal, rich's live bar; else (a log file, CI) that bar prints nothing until the end: a line per model
    shown = Bar(out, len(plan)) if out.is_terminal else ModelLines(out, list(dict.fromkeys(m for m, _, _ in plan)))
    with shown:
        try:
            measured = sweep.run(advance=shown.advance)
        except KeyboardInterrupt:  # Ctrl-C: the report shows what was stored (a later run resumes the rest)
            write_report(None)
            raise
    rows = sweep.rows()  # this sweep's models, each by its content key (not an earlier version's rows)
    paths = report.write(rows, cfg.out, cfg.cache)
    out.print(f"{measured} new measurement(s); {len(rows)} row(s) in {store.path}")
    out.print(phase_line(sweep.phases, cfg.out))
    out.print("report: " + ", ".join(str(p) for p in paths))
    # last, the answer: the report's summary, and the warnings counted (report.md lists them with their causes)
    summary.print_summary(out, rows, cfg.out, cfg.cache)
    if args.json:
        import json  # deferred: only this subcommand needs it (CLI start-up)

        print(json.dumps(rows, indent=1, default=str))


def duration(seconds: float) -> str:
    """``seconds`` for a reader: "42 s", "12 min 05 s", "1 h 02 min"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Bar:
    """In a terminal: rich's live bar over the sweep's (model, variant, runtime) items, with the current step."""

    def __init__(self, out, total: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)  # deferred: only this subcommand needs it (CLI start-up)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=out,
                                 transient=False)
        self.task = self.progress.add_task("sweep", total=total)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            self.progress.update(self.task, description="sweep done")
        self.progress.stop()

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def advance(self) -> None:
        self.progress.advance(self.task)

    def model_done(self, model: str, stored: int) -> None:
        pass  # the bar shows it


class ModelLines:
    """Not a terminal (``make bench > log``, CI): one plain line per finished model, printed (and flushed) as it
    finishes, with the time so far and an estimate of the time left from the models done so far."""

    def __init__(self, out, models: list[str], clock=time.monotonic):
        self.out, self.models, self.clock = out, models, clock
        self.spent: list[tuple[float, bool]] = []  # (seconds, whether it measured anything) per finished model
        self.stored = 0

    def __enter__(self):
        self.start = self.last = self.clock()
        self.out.print(f"sweep: {len(self.models)} model(s); a line as each one finishes", markup=False)
        return self

    def __exit__(self, *_):
        pass

    def step(self, text: str) -> None:
        pass  # steps are too many for a log: a line per model

    def advance(self) -> None:
        pass

    def model_done(self, model: str, stored: int) -> None:
        """``stored``: the rows this run has stored so far (a model found whole in the store took no measuring,
        so its seconds do not count towards the estimate while a model that measured something does)."""
        now = self.clock()
        took, self.last = now - self.last, now
        self.spent.append((took, stored > self.stored))
        self.stored = stored
        measured = [s for s, new in self.spent if new] or [s for s, _ in self.spent]
        left = sum(measured) / len(measured) * (len(self.models) - len(self.spent))
        self.out.print(f"[{len(self.spent)}/{len(self.models)}] {model}: done in {duration(took)}; "
                       f"elapsed {duration(now - self.start)}, about {duration(left)} left", markup=False, soft_wrap=True)


def phase_line(phases, out: Path) -> str:
    """Where this run's time went (train / build / measure, summed over models), also kept in OUT/phases.json."""
    from models.artifacts import write_json  # deferred: only this subcommand needs it (CLI start-up)

    total = phases.total()
    write_json(out / "phases.json", {"total_s": total, "per_model_s": phases.seconds,
                                     "build_per_variant_s": phases.variants})
    slowest = ", ".join(f"{m}/{v} {s:.0f} s" for m, v, s in phases.slowest_builds(3))
    return (f"time: train {total['train']:.0f} s, build {total['build']:.0f} s, measure {total['measure']:.0f} s "
            f"(of which task metric {total['score']:.0f} s) — per model in {out / 'phases.json'}"
            + (f"; slowest builds: {slowest}" if slowest else ""))


def _report(args):
    from benchmarks.report import markdown as report  # deferred: only this subcommand needs it (CLI start-up)

    db = Path(args.out) / "results.db"
    if not db.exists():
        raise UserError(f"no results store at {db}; run `python -m benchmarks run` first")
    rows = _store_at(str(db)).rows(args.models)
    claim = claim_output_file(Path(args.out) / "report.md", [db], also=[Path(args.out) / "report.html",
                                                                        Path(args.out) / "results.json"])
    paths = report.write(rows, Path(args.out), args.cache_dir)
    claim.record()
    console().print("report: " + ", ".join(str(p) for p in paths))


def _profile(args):
    from benchmarks.profiling import command as profile  # deferred: only this subcommand needs it (CLI start-up)

    batch = positive_int(args.batch, "--batch")
    threads = positive_int(args.threads, "--threads") if args.threads else None
    runs = positive_int(args.runs, "--runs")
    profile.claim_results(Path(args.out), take=False)  # a folder of the user's is refused before any work
    subject = profile.resolve(args.model, args.variant, batch, tiny=args.tiny, cache=args.cache_dir)
    result = profile.run_profile(subject, args.runtime, runs=runs, batch=batch, threads=threads)
    path = profile.save(result, Path(args.out))
    if args.json:
        import json  # deferred: only this subcommand needs it (CLI start-up)

        print(json.dumps(result.to_json(), indent=1))
        return 0
    from rich.table import Table  # deferred: only this subcommand needs it (CLI start-up)

    table = Table()
    for col in ("#", "layer", "ms", "share", "ops", "op types"):
        table.add_column(col, justify="right" if col in ("#", "ms", "share", "ops") else "left")
    for i, layer in enumerate(result.layers[:args.top], 1):
        table.add_row(str(i), layer.layer, f"{layer.ms:.4f}", f"{layer.share:.1%}", str(layer.ops),
                      ", ".join(layer.op_types))
    out = console()
    out.print(f"{result.model} {result.variant} on {result.runtime}: {result.total_ms:.3f} ms per run in its ops "
              f"(10% trimmed mean per op over {result.runs} runs, batch {result.batch}, {result.threads} threads)")
    out.print(table)
    out.print(f"profile: {path} ({result.profiler})")
    return 0


def _store_at(path: str):
    from benchmarks.store import Store  # deferred: only this subcommand needs it (CLI start-up)

    p = Path(path)
    db = p / "results.db" if p.is_dir() else p
    if not db.exists():
        raise UserError(f"no results store at {db}")
    return Store(db, create=False)


def _compare(args):
    from benchmarks.compare import compare  # deferred: only this subcommand needs it (CLI start-up)

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
    p.add_argument("--models", nargs="+", default=None,
                   help="your model files (.keras/.h5/SavedModel, tf_keras or Keras 3) and/or zoo names "
                        "(default: the whole zoo)")
    from models.cli import add_subject_args  # deferred: only this subcommand needs it (CLI start-up)

    add_subject_args(p)
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers / serialized code in model files")
    p.add_argument("--variants", nargs="+", default=None)
    p.add_argument("--runtimes", nargs="+", default=None)
    p.add_argument("--batch", nargs="+", default=None, help="batch sizes (default 1)")
    p.add_argument("--threads", nargs="+", default=None, help="thread counts (default: all cores)")
    p.add_argument("--quick", action="store_true",
                   help="fp32 and int8 of each format on the main runtimes (no pruned, dynamic, float16 files, no "
                        "model.predict or LiteRT-without-XNNPACK rows), shorter warm-up and timed runs, batch 1, all "
                        "cores; a runtime whose outputs match another's on the same file (checked on 32 test "
                        "inputs) reuses its metric")
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
    p.add_argument("--cache-dir", default=None, help="the sweep's --cache-dir (where its variants are kept)")
    p.set_defaults(fn=_report)
    p = sub.add_parser("profile", help="per-layer profile of one variant with the runtime's own op profiler")
    p.add_argument("model", help="zoo name or a .tflite/.onnx file")
    p.add_argument("--variant", default=None, help="e.g. onnx-int8 (required for a zoo name)")
    p.add_argument("--runtime", default=None, help="onnxruntime-cpu for .onnx (default), litert for .tflite")
    p.add_argument("--runs", default="50", help="profiled runs after 5 warm-up runs (default 50)")
    p.add_argument("--batch", default="1")
    p.add_argument("--threads", default=None, help="default: all cores")
    p.add_argument("--top", type=int, default=15, help="layers to print (default 15)")
    p.add_argument("--tiny", action="store_true", help="use the zoo's tiny configuration")
    p.add_argument("--out", default="results", help="results directory; the profile goes to OUT/profiles/")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.set_defaults(fn=_profile)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(run(main))
