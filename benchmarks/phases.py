"""Where a sweep's time goes: wall seconds per model in each phase (printed at the end, kept in phases.json)."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field


@dataclass
class Phases:
    """Wall seconds per model in each phase of the sweep: train (or load the cached file), build the variants,
    measure (the task metric on the test split, then the timed runs; ``score`` is the metric's share of it)."""

    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    #: model -> variant -> seconds its build child spent on it (chains built side by side overlap in "build")
    variants: dict[str, dict[str, float]] = field(default_factory=dict)

    NAMES = ("train", "build", "measure", "score")

    @contextlib.contextmanager
    def timing(self, model: str, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            per_model = self.seconds.setdefault(model, dict.fromkeys(self.NAMES, 0.0))
            per_model[phase] += time.perf_counter() - start

    def built(self, model: str, variant: str, seconds: float) -> None:
        self.variants.setdefault(model, {})[variant] = round(seconds, 2)

    def slowest_builds(self, n: int = 5) -> list[tuple[str, str, float]]:
        every = [(m, v, s) for m, per in self.variants.items() for v, s in per.items()]
        return sorted(every, key=lambda t: -t[2])[:n]

    def total(self) -> dict[str, float]:
        return {p: sum(m[p] for m in self.seconds.values()) for p in self.NAMES}
