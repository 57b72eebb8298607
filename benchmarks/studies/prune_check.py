"""Does 50% magnitude pruning keep accuracy? Baseline → pruned metric per zoo model, with the recipe used.

    python -m benchmarks.studies.prune_check [--models ...] [--sparsity 0.5] [--tiny] [--out FILE.jsonl]

Prunes exactly as the sweep's ``pruned`` variant does (benchmarks/variants.py): the plan from
``compress.techniques.finetune.for_spec(spec, config, splits)`` (fit()-trained models fine-tune with the recipe's
defaults, custom-loop models run one-shot and say why), then ``compress.techniques.pruning.prune(model, plan,
sparsity)``, scored on the test split. One JSON line per model is appended to ``--out`` as soon as it is
measured, so a long run over the zoo keeps what it finished.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from models import registry
from models.artifacts import claim_output_file
from models.cli import ArgumentParser, run
from models.errors import UserError
from models.loading import load_keras
from models.subject import resolve
from compress.techniques import finetune
from compress.techniques import pruning

#: the goal: at most this drop (a point, on metrics in [0, 1]; relative for unbounded ones such as RMSE)
MAX_DROP = 0.01


@dataclass
class PruneCheck:
    model: str
    metric: str
    baseline: float | None
    pruned: float | None
    fine_tuned: bool
    recipe: str
    schedule: str
    seconds: float
    achieved_sparsity: float | None = None
    note: str = ""

    @property
    def drop(self) -> float | None:
        """Positive when pruning made it worse: points on [0, 1] metrics, relative change otherwise."""
        if self.baseline is None or self.pruned is None:
            return None
        spec = registry.get(self.model)
        worse = (self.baseline - self.pruned) if spec.metric.higher_is_better else (self.pruned - self.baseline)
        bounded = 0.0 <= self.baseline <= 1.0 and spec.metric.higher_is_better
        return worse if bounded or self.baseline == 0 else worse / abs(self.baseline)

    @property
    def ok(self) -> bool | None:
        return None if self.drop is None else self.drop <= MAX_DROP + 1e-12

    def row(self) -> str:
        fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        drop = "—" if self.drop is None else f"{self.drop:+.4f}"
        ok = {True: "yes", False: "NO", None: "—"}[self.ok]
        tuned = "fit" if self.fine_tuned else "one-shot"
        return (f"| {self.model} | {self.metric} | {fmt(self.baseline)} | {fmt(self.pruned)} | {drop} | {ok} "
                f"| {tuned} | {self.recipe}; {self.schedule} | {self.seconds:.0f} |{' ' + self.note if self.note else ''}")


HEADER = ("| model | metric | baseline | 50% pruned | drop | within 1 pt | fine-tuning | recipe | s |\n"
          "|---|---|---|---|---|---|---|---|---|")


def check(name: str, sparsity: float = 0.5, tiny: bool = False, cache=None) -> PruneCheck:
    """Prune one zoo model the sweep's way and score it before and after."""
    start = time.perf_counter()
    subject = resolve(name, tiny=tiny, cache=cache)
    baseline = subject.score(subject.model)
    plan = finetune.for_spec(subject.spec, subject.config or {}, subject.splits)
    model, outcome = pruning.prune(load_keras(subject.path, custom_objects=subject.custom_objects), plan,
                                   sparsity=sparsity)
    metric = subject.spec.metric.name
    if not outcome.ran:
        return PruneCheck(name, metric, baseline, None, plan.enabled, plan.describe_pruning(), "not pruned",
                          time.perf_counter() - start, note=outcome.reason())
    details = outcome.details
    return PruneCheck(name, metric, baseline, subject.score(model), plan.enabled, details["fine_tuning"],
                      f"schedule {details['schedule']}" + (f"; {details['kept_dense']}" if details.get("kept_dense")
                                                            else ""), time.perf_counter() - start,
                      details.get("achieved_sparsity"))


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.studies.prune_check")
    parser.add_argument("--models", nargs="+", default=None, help="zoo models (default: every trainable one)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--tiny", action="store_true", help="tiny configs (a smoke test, not a measurement)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=None, help="append one JSON line per model to this file")
    args = parser.parse_args(argv)
    if not 0.0 <= args.sparsity < 1.0:
        raise UserError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    names = args.models or [s.name for s in registry.specs() if s.trainable]
    for name in names:
        registry.get(name)  # unknown names fail before any training
    claim = claim_output_file(args.out) if args.out else None  # a file of the user's is not appended to
    print(HEADER, flush=True)
    failed = 0
    for name in names:
        try:
            result = check(name, args.sparsity, args.tiny, args.cache_dir)
        except Exception as e:  # one model that cannot be pruned does not stop the check; it says why
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            result = PruneCheck(name, registry.get(name).metric.name, None, None, False, "", "error", 0.0,
                                note=f"error: {type(e).__name__}: {first}")
        failed += result.ok is False
        print(result.row(), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({**asdict(result), "drop": result.drop, "ok": result.ok,
                                    "sparsity": args.sparsity, "tiny": args.tiny, "time": time.time()}) + "\n")
            claim.record()  # the next line, or the next run, may append to it
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
