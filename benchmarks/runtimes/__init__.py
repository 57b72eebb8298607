"""One adapter per runtime. Each says whether it is available here (and why not), which artifact format
it runs, and how to load one. GPU runtimes are listed everywhere and say why they are unavailable."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from models.errors import UserError

from benchmarks.runtimes import keras_tf, litert, onnxruntime


@dataclass(frozen=True)
class Runtime:
    name: str
    format: str  # artifact format it runs: keras | tflite | onnx
    unavailable: Callable[[], str | None]  # None when usable, else the reason
    load: Callable  # (path, threads) -> Loaded
    gpu: bool = False
    #: another way to run what a main runtime runs (model.predict beside the compiled call, LiteRT without
    #: XNNPACK): worth a row in the full sweep, left out by --quick
    diagnostic: bool = False


RUNTIMES = [
    Runtime("keras", "keras", keras_tf.unavailable, keras_tf.load),
    Runtime("keras-predict", "keras", keras_tf.unavailable, keras_tf.load_predict, diagnostic=True),
    Runtime("tf-gpu", "keras", keras_tf.gpu_unavailable, keras_tf.load_gpu, gpu=True),
    Runtime("litert", "tflite", litert.unavailable, litert.load),
    Runtime("litert-noxnnpack", "tflite", litert.unavailable, functools.partial(litert.load, xnnpack=False),
            diagnostic=True),
    Runtime("onnxruntime-cpu", "onnx", onnxruntime.cpu_unavailable,
            functools.partial(onnxruntime.load, provider="CPUExecutionProvider")),
    Runtime("onnxruntime-cuda", "onnx", functools.partial(onnxruntime.provider_unavailable, "CUDAExecutionProvider"),
            functools.partial(onnxruntime.load, provider="CUDAExecutionProvider"), gpu=True),
    Runtime("onnxruntime-tensorrt", "onnx",
            functools.partial(onnxruntime.provider_unavailable, "TensorrtExecutionProvider"),
            functools.partial(onnxruntime.load, provider="TensorrtExecutionProvider"), gpu=True),
]


QUICK = [r.name for r in RUNTIMES if not r.diagnostic]


def by_name(name: str) -> Runtime:
    for r in RUNTIMES:
        if r.name == name:
            return r
    raise UserError(f"unknown runtime {name!r}; valid: {', '.join(r.name for r in RUNTIMES)}")
