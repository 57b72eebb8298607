"""What a compressed model costs: file sizes (raw and gzip), parameters, and batch-1 LiteRT latency."""
from __future__ import annotations

import statistics
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from models.backend import quiet_stderr, tf


def fp32_tflite(model) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with quiet_stderr():
        return converter.convert()


def litert_latency_ms(data: bytes, sample, runs: int = 200, warmup: int = 20, threads: int = 1) -> float:
    """Median batch-1 latency of a TFLite model on LiteRT (CPU, ``threads`` threads), in milliseconds."""
    interp = Interpreter(model_content=data, num_threads=threads)
    details = interp.get_input_details()
    for d in details:
        shape = [1] + [int(s) for s in d["shape"][1:]]
        interp.resize_tensor_input(d["index"], shape)
    interp.allocate_tensors()
    feeds = []
    for d in details:
        value = sample[d["name"].split(":")[0].removeprefix("serving_default_")] if isinstance(sample, dict) else sample
        value = np.asarray(value)[:1]
        if d["dtype"] == np.int8 and value.dtype.kind == "f":
            scale, zero = d["quantization"]
            value = np.clip(np.round(value / scale + zero), -128, 127)
        feeds.append((d["index"], value.astype(d["dtype"])))
    times = []
    for i in range(warmup + runs):
        for index, value in feeds:
            interp.set_tensor(index, value)
        start = time.perf_counter()
        interp.invoke()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0
