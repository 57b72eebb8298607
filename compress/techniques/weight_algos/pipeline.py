"""The weight algorithms a recipe names, run in their order on one model: model in -> model out, an Outcome each."""
from __future__ import annotations

from dataclasses import dataclass, field

from compress.techniques.outcome import Outcome
from compress.techniques.weight_algos import ALGOS, DESCRIPTIONS, common, parse
from compress.techniques.weight_algos.adaround import adaround
from compress.techniques.weight_algos.bias_correction import bias_correction
from compress.techniques.weight_algos.cle import cle

Grid = common.Grid


@dataclass
class Result:
    model: object
    outcomes: list[Outcome] = field(default_factory=list)
    #: batch norm -> the layer it was folded into (the result has no such batch norm)
    folded: dict = field(default_factory=dict)

    @property
    def ran(self) -> list[str]:
        return [o.technique for o in self.outcomes if o.ran]

    def notes(self) -> list[str]:
        """Lines for the console and the file's notes: each algorithm's summary, then every layer it left alone."""
        lines = []
        if self.folded:
            lines.append("batch norms folded into their layers first: "
                         + ", ".join(f"{bn} -> {into}" for bn, into in self.folded.items()))
        unhandled = {}
        for o in self.outcomes:
            lines.append(o.summary() if o.ran else f"warning: {o.reason()}")
            for layer, why in o.skipped.items():
                if why.endswith(common.UNHANDLED):
                    unhandled[layer] = why.split(":")[0]
                elif o.ran:
                    lines.append(f"  {o.technique} skipped {layer}: {why}")
        if unhandled:
            lines.append("  left as they are for the converter (the weight algorithms handle "
                         f"{common.HANDLED}): " + ", ".join(f"{k} ({v})" for k, v in unhandled.items()))
        return lines

    def record(self) -> dict:
        """What the sidecar keeps: which ran, where, and why not elsewhere."""
        return {"ran": self.ran, "folded_batchnorms": self.folded,
                "outcomes": [{"technique": o.technique, "applied": o.applied, "skipped": o.skipped,
                              "blocked": o.blocked, "details": _plain(o.details)} for o in self.outcomes]}


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item"):
        return obj.item()
    return obj


def apply(model, algos, calibration, grid: Grid = common.TFLITE_GRID, exclude=(), seed: int = 0) -> Result:
    """Run ``algos`` (names, any order; see ALGOS for the order they run in) on ``model``; the caller's model is
    not changed. Bias correction measures against the fp32 model after CLE (the same function as ``model``)."""
    names = parse(algos)
    problem = common.graph_problem(model)
    if problem:
        return Result(model, [Outcome(n, blocked=problem) for n in names])
    current, folded, _ = common.fold_batchnorms(model)
    result = Result(current, folded=folded)
    reference = current
    for name in names:
        if name == "cle":
            current, outcome = cle(current, calibration)
            reference = current
        elif name == "adaround":
            current, outcome = adaround(current, calibration, grid, exclude, seed=seed)
        else:
            current, outcome = bias_correction(current, calibration, reference=reference, grid=grid, exclude=exclude)
        outcome.details.pop("folded", None)  # folded once, above, for all of them
        result.outcomes.append(outcome)
    result.model = current
    return result


__all__ = ["ALGOS", "DESCRIPTIONS", "Grid", "Result", "apply", "parse"]
