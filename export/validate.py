"""Validation of an exported file against its Keras source, kept apart from conversion."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.artifacts import sha256_file
from models.spec import n_samples
from models.verdict import Verdict, within


#: float32 rounding scales with the value: parity allows ``atol + RTOL * |reference|`` per element (np.allclose's
#: default rtol), so an output of magnitude 100 is not held to the 1e-4 a probability is
RTOL = 1e-5


@dataclass
class OutputParity:
    name: str
    max_abs: float
    max_rel: float
    #: max over elements of |Δ| - RTOL * |reference|: what must stay within atol
    max_excess: float | None = None

    def within(self, atol: float) -> bool:
        worst = self.max_abs if self.max_excess is None else self.max_excess
        return bool(np.isfinite(self.max_abs) and worst <= atol)


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
    #: a quantized export fails when its metric drops more than this below the Keras model's (None: not judged)
    max_drop: float | None = None
    higher_is_better: bool = True
    #: how ``metric_export`` was computed: the benchmarks runtime name matching the loader (export.runtime.load with
    #: its defaults) and the number of test samples scored, so a sweep can reuse it instead of scoring again
    runtime: str | None = None
    metric_n_samples: int | None = None
    #: the accuracy gate's verdict on the metric (with ``max_drop``): what the commands print and judge
    verdict: Verdict | None = None

    def record(self) -> dict:
        """What the sidecar keeps of this validation (``validation`` key)."""
        return {"metric_name": self.metric_name, "metric_source": self.metric_source,
                "metric_export": self.metric_export, "metric_n_samples": self.metric_n_samples,
                # threads None: the runtime's default, as export.runtime.load(path) and the sweep's scoring load it
                "runtime": self.runtime, "threads": None, "parity_n_samples": self.n_samples,
                "inputs_from": self.inputs_from, "top1_agreement": self.top1_agreement}

    @property
    def metric_drop(self) -> float | None:
        """How much worse the export scores than the Keras model (positive: worse), in the metric's units."""
        if self.metric_source is None or self.metric_export is None:
            return None
        delta = self.metric_source - self.metric_export
        return delta if self.higher_is_better else -delta

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def metric_passed(self) -> bool:
        """The accuracy gate (models.verdict): inclusive at the budget; True when not judged."""
        if self.verdict is not None:
            return self.verdict.passed
        drop = self.metric_drop
        return self.max_drop is None or drop is None or within(drop, self.max_drop)

    @property
    def passed(self) -> bool:
        if not self.metric_passed:
            return False
        if self.atol is None:
            return True
        return all(o.within(self.atol) for o in self.outputs)

    def failure(self) -> str:
        if not self.metric_passed:
            if self.verdict is not None:
                return self.verdict.failure()
            return (f"{self.metric_name} dropped from {self.metric_source:.4f} to {self.metric_export:.4f} "
                    f"({self.metric_drop:+.4f} worse, more than the allowed {self.max_drop:g}; --max-drop to change "
                    "it)")
        worst = next((o for o in self.outputs if not o.within(self.atol)), max(self.outputs, key=lambda o: o.max_abs))
        return (f"output {worst.name!r} drifted: max abs error {worst.max_abs:.3g} > tolerance {self.atol:.3g} "
                f"(+ {RTOL:g} x |value|)")


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
        excess = diff - RTOL * np.abs(ref.astype(np.float64))
        result.append(OutputParity(name, float(diff.max(initial=0)), float(rel.max(initial=0)),
                                   float(excess.max(initial=0))))
    return result


def top1_agreement(reference, candidate) -> float | None:
    ref, got = as_list(reference)[0], as_list(candidate)[0]
    if ref.ndim < 2 or ref.shape[-1] < 2 or got.shape != ref.shape:
        return None
    return float(np.mean(ref.argmax(-1) == got.argmax(-1)))


#: ONNX Runtime execution provider -> the benchmarks runtime (benchmarks/runtimes) that runs a file the same way
ONNX_RUNTIMES = {"CPUExecutionProvider": "onnxruntime-cpu", "CUDAExecutionProvider": "onnxruntime-cuda",
                 "TensorrtExecutionProvider": "onnxruntime-tensorrt"}


def runtime_name(exported) -> str | None:
    """The benchmarks runtime matching how ``export.runtime.load(path)`` (default arguments) loaded ``exported``:
    LiteRT with its default XNNPACK delegate is ``litert``; ONNX Runtime is named by its first provider."""
    session = getattr(exported, "session", None)
    if session is not None:
        return ONNX_RUNTIMES.get(session.get_providers()[0])
    return "litert" if getattr(exported, "interpreter", None) is not None else None


def validated_metric(path: Path, runtime: str, metric_name: str, test_x) -> float | None:
    """The task metric the export's validation computed for this very file on ``runtime`` over the whole test
    split (its sidecar's ``validation``), or None: a file built once is not scored twice on the same runtime."""
    sidecar = Path(str(path) + ".json")
    try:
        record = json.loads(sidecar.read_text()).get("validation") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if (record.get("runtime") != runtime or record.get("metric_name") != metric_name
            or record.get("metric_export") is None
            or record.get("metric_n_samples") != n_samples(test_x)):
        return None
    if record.get("file_sha256") != sha256_file(path):  # the metric belongs to this very file
        return None
    return float(record["metric_export"])
