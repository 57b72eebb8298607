"""ONNX Runtime with one execution provider (CPU, CUDA or TensorRT)."""
from __future__ import annotations

import time

from .loaded import Loaded


def cpu_unavailable() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    return None


def provider_unavailable(provider: str) -> str | None:
    reason = cpu_unavailable()
    if reason:
        return reason
    import onnxruntime

    if provider not in onnxruntime.get_available_providers():
        return (f"{provider} is not in this onnxruntime build's providers "
                f"({', '.join(onnxruntime.get_available_providers())}); install the gpu extra on an NVIDIA machine")
    return None


def load(path, threads: int | None = None, provider: str = "CPUExecutionProvider") -> Loaded:
    from export import runtime

    t0 = time.perf_counter()
    model = runtime.load(path, providers=[provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider"
                                                      else []), threads=threads)
    if model.providers[0] != provider:
        raise RuntimeError(f"{provider} could not be used (session fell back to {model.providers[0]})")
    return Loaded(model.predict, model.bind, (time.perf_counter() - t0) * 1e3, provider=provider)
