"""LiteRT (ai-edge-litert interpreter), with the default XNNPACK delegate or with builtin kernels only."""
from __future__ import annotations

import time

from export import runtime

from benchmarks.runtimes.loaded import Loaded


def unavailable() -> str | None:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError as e:
        return f"ai-edge-litert is not installed ({e})"
    return None


def load(path, threads: int | None = None, xnnpack: bool = True) -> Loaded:
    t0 = time.perf_counter()
    model = runtime.load(path, threads=threads, xnnpack=xnnpack)
    return Loaded(model.predict, model.bind, (time.perf_counter() - t0) * 1e3,
                  provider="xnnpack" if xnnpack else "builtin")
