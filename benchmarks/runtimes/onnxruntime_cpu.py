"""ONNX Runtime with the CPU execution provider."""
from __future__ import annotations

import time

from .loaded import Loaded


def unavailable() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    return None


def load(path, threads: int | None = None) -> Loaded:
    from export import runtime

    t0 = time.perf_counter()
    model = runtime.load(path, providers=["CPUExecutionProvider"], threads=threads)
    return Loaded(model.predict, (time.perf_counter() - t0) * 1e3, provider="CPUExecutionProvider")
