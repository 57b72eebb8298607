"""Greedy keep-in-float: the fewest, most sensitive layers in float that bring an int8 model's drop inside a budget.

The ranking (``export.quantize.sensitivity``) only says where the quantization error is; whether keeping a layer in
float helps the task metric is measured: the caller's ``drop_of`` exports and scores each candidate set, and a
revert that does not reduce the drop is undone (stepped back), so every layer left in float earned its place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from export.quantize.sensitivity import LayerSensitivity


@dataclass
class Step:
    kept_float: tuple[str, ...]  # the layers in float when this step was scored
    drop: float
    accepted: bool
    why: str


@dataclass
class MixedPrecision:
    kept_float: tuple[str, ...]
    drop: float
    within_budget: bool
    steps: list[Step] = field(default_factory=list)


def keep_in_float(ranking: list[LayerSensitivity], drop_of: Callable[[tuple[str, ...]], float], budget: float,
                  max_layers: int | None = None) -> MixedPrecision:
    """Revert layers to float in ranking order, re-scoring after each, until ``drop_of(kept) <= budget``.

    ``drop_of(layers)`` is the metric drop (positive = worse) of the file with those layers in float. A revert
    that does not lower the drop is stepped back and the next layer tried; at most ``max_layers`` layers are
    tried (all by default). When the budget is never met, the best set found is returned with
    ``within_budget`` False.
    """
    kept: tuple[str, ...] = ()
    drop = float(drop_of(kept))
    inside = drop <= budget
    steps = [Step(kept, drop, True, f"all int8: drop {_fmt(drop)} " + ("within" if inside else "over")
                  + f" the budget {budget:.4g}" + ("; nothing kept in float" if inside else ""))]
    tries = len(ranking) if max_layers is None else min(max_layers, len(ranking))
    for candidate in ranking[:tries]:
        if inside:
            break
        trial = kept + (candidate.layer,)
        new = float(drop_of(trial))
        if new < drop:
            kept, drop, inside = trial, new, new <= budget
            why = (f"kept {candidate.layer} in float: drop {_fmt(new)} (from {_fmt(steps_best(steps))}), "
                   + (f"within the budget {budget:.4g}" if inside else f"still over the budget {budget:.4g}"))
            steps.append(Step(trial, new, True, why))
        else:
            steps.append(Step(trial, new, False, f"stepped back: {candidate.layer} in float gives drop {_fmt(new)}, "
                                                 f"no better than {_fmt(drop)}"))
    if not inside and not ranking:
        steps[-1].why += "; no ranked layer to keep in float"
    elif not inside:
        untried = len(ranking) - tries
        steps[-1].why += (f"; budget not met after trying {tries} layer(s)"
                          + (f" ({untried} more not tried: max_layers={max_layers})" if untried else ""))
    return MixedPrecision(kept, drop, inside, steps)


def steps_best(steps: list[Step]) -> float:
    """The drop of the last accepted step (the set the next revert starts from)."""
    return next(s.drop for s in reversed(steps) if s.accepted)


def _fmt(drop: float) -> str:
    return "unscored" if math.isinf(drop) else f"{drop:+.4f}"
