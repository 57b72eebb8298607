"""A profile's data: per-layer times aggregated from a runtime's op events, each op mapped to its Keras layer, and
where profiles are stored (``<results>/profiles/``, read by the report)."""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from models.artifacts import safe_name

PROFILE_DIR = "profiles"
QDQ_SUFFIXES = ("_QuantizeLinear", "_DequantizeLinear", "_quantized", "_dequantized", "_quant", "_dequant", "_Q",
                "_DQ")




def profile_path(out_dir: Path, model: str, variant: str, runtime: str) -> Path:
    """``<out>/profiles/<model>--<variant>--<runtime>.json``; a name that would leave that folder is refused."""
    return Path(out_dir) / PROFILE_DIR / safe_name(f"{model}--{variant}--{runtime}.json", "profile name")


@dataclass
class LayerTime:
    layer: str
    ms: float  # per run, summed over the layer's ops
    share: float  # of the run's total op time
    ops: int
    op_types: list[str]


@dataclass
class Profile:
    model: str
    variant: str
    runtime: str
    path: str
    runs: int
    batch: int
    threads: int
    total_ms: float  # per run, all ops (sum of the ops' trimmed means)
    profiler: str
    layers: list[LayerTime] = field(default_factory=list)
    created: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def layer_of(node: str, layers: set[str] | None) -> str | None:
    """The Keras layer an op belongs to, from its name's path (None: no component names a layer)."""
    parts = [p for p in node.split("/") if p]
    if layers is not None:
        for part in reversed(parts):
            for candidate in (part, *(part[: -len(s)] for s in QDQ_SUFFIXES if part.endswith(s))):
                if candidate in layers:
                    return candidate
        return None
    return parts[-2] if len(parts) >= 2 else None  # a file without its Keras model: the op's parent scope


def keras_layer_names(model) -> set[str]:
    """Every layer name in a Keras model, nested models included (their own name excluded: ops sit in a layer)."""
    names = set()
    for layer in model.layers:
        if hasattr(layer, "layers"):
            names |= keras_layer_names(layer)
        else:
            names.add(layer.name)
    return names


def aggregate(ops: list[tuple[str, str, float]], runs: int, layers: set[str] | None) -> tuple[float, list[LayerTime]]:
    """(node name, op type, µs) of every op run -> per-run ms and share per layer, slowest first. An op's per-run
    time is its 10% trimmed mean over the runs (one preempted run on a shared CPU must not make a layer look
    slow, and whole-µs timings need a mean, not a median)."""
    from scipy.stats import trim_mean  # deferred: SciPy

    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    for name, op_type, us in ops:
        samples[(name, op_type)].append(us)
    by_layer: dict[str, list] = defaultdict(lambda: [0.0, 0, set()])
    for (name, op_type), us in samples.items():
        per_run = max(1, round(len(us) / runs))  # an op inside a loop runs several times per call
        label = name.split(" @")[0] if name.startswith("(") else f"(no Keras layer) {op_type}"
        entry = by_layer[layer_of(name, layers) or label]
        entry[0] += float(trim_mean(us, 0.1)) * per_run
        entry[1] += per_run
        entry[2].add(op_type)
    total_us = sum(e[0] for e in by_layer.values())
    out = [LayerTime(layer, e[0] / 1000.0, e[0] / total_us if total_us else 0.0, e[1], sorted(e[2]))
           for layer, e in by_layer.items()]
    return total_us / 1000.0, sorted(out, key=lambda x: -x.ms)
