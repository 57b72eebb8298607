"""One adapter per runtime. Each says whether it is available (and why not), which artifact
formats it runs, and how to load one into a blocking ``predict(inputs)``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import keras_tf, litert, onnxruntime_cpu


@dataclass(frozen=True)
class Runtime:
    name: str
    format: str  # artifact format it runs: keras | tflite | onnx
    unavailable: Callable[[], str | None]  # None when usable, else the reason
    load: Callable  # (path, threads) -> Loaded


RUNTIMES = [
    Runtime("keras", "keras", keras_tf.unavailable, keras_tf.load),
    Runtime("litert", "tflite", litert.unavailable, litert.load),
    Runtime("onnxruntime-cpu", "onnx", onnxruntime_cpu.unavailable, onnxruntime_cpu.load),
]


def by_name(name: str) -> Runtime:
    for r in RUNTIMES:
        if r.name == name:
            return r
    from models.errors import UserError

    raise UserError(f"unknown runtime {name!r}; valid: {', '.join(r.name for r in RUNTIMES)}")
