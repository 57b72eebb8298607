"""Validation of an exported file against its Keras source, kept apart from conversion."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class OutputParity:
    name: str
    max_abs: float
    max_rel: float


@dataclass
class Validation:
    n_samples: int
    inputs_from: str  # "test split" or "random inputs (no data for this model)"
    atol: float | None  # None: a quantized export, judged on its metric not on parity
    outputs: list[OutputParity] = field(default_factory=list)
    metric_name: str | None = None
    metric_source: float | None = None
    metric_export: float | None = None
    top1_agreement: float | None = None

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def passed(self) -> bool:
        if self.atol is None:
            return True
        return all(np.isfinite(o.max_abs) and o.max_abs <= self.atol for o in self.outputs)

    def failure(self) -> str:
        worst = max(self.outputs, key=lambda o: o.max_abs)
        return f"output {worst.name!r} drifted: max abs error {worst.max_abs:.3g} > tolerance {self.atol:.3g}"


def as_list(outputs) -> list[np.ndarray]:
    return [np.asarray(o) for o in outputs] if isinstance(outputs, (list, tuple)) else [np.asarray(outputs)]


def parity(reference, candidate, names: list[str]) -> list[OutputParity]:
    result = []
    for name, ref, got in zip(names, as_list(reference), as_list(candidate)):
        got = got.reshape(ref.shape) if got.size == ref.size else got
        if got.shape != ref.shape:
            result.append(OutputParity(name, float("inf"), float("inf")))
            continue
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        rel = diff / np.maximum(np.abs(ref.astype(np.float64)), 1e-6)
        result.append(OutputParity(name, float(diff.max(initial=0)), float(rel.max(initial=0))))
    return result


def top1_agreement(reference, candidate) -> float | None:
    ref, got = as_list(reference)[0], as_list(candidate)[0]
    if ref.ndim < 2 or ref.shape[-1] < 2 or got.shape != ref.shape:
        return None
    return float(np.mean(ref.argmax(-1) == got.argmax(-1)))
