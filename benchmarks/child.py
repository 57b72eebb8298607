"""Measurement worker: runs requests for one runtime and thread count in its own process.

The sweep starts one worker per (runtime, threads) and sends it JSON requests on stdin, one per line;
each answer is one ``CT-RESULT {...}`` line on stdout. A separate process keeps one runtime's threads,
memory and crashes away from the others: if a native runtime kills the worker, that request is a
failed row and the next request gets a fresh worker. Peak memory per request is read from the
kernel's high-water mark, which is reset before each request.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
import time

import numpy as np

from benchmarks import runtimes
from benchmarks.runner import batch_of, harness_overhead, measure, Method, selfcheck_block

_CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _status_mb(field: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def pin(threads: int) -> list[int]:
    """Pin this worker to ``threads`` of the cores it was given (all of them for threads >= cores): neither the
    scheduler nor Ray keeps other work off a measurement's cores, and a 1-thread run must not wander."""
    if not _CORES:
        return []
    cores = _CORES[:max(1, min(threads or len(_CORES), len(_CORES)))]
    os.sched_setaffinity(0, cores)
    return cores


def _inputs(path):
    with np.load(path, allow_pickle=False) as data:
        if list(data.keys()) == ["__single__"]:
            return data["__single__"]
        return {k: data[k] for k in data.keys()}


def measure_request(req: dict) -> dict:
    runtime = runtimes.by_name(req["runtime"])
    x = _inputs(req["inputs"])
    cores = pin(req["threads"])
    gc.collect()
    _reset_peak()
    base = _status_mb("VmRSS")
    loaded = runtime.load(req["path"], req["threads"])
    method = Method(**req["method"])
    results = []
    for batch in req["batches"]:
        call = loaded.bind(batch_of(x, batch))
        stats = measure(call, method)
        row = stats.as_dict()
        row.update(batch=batch, throughput=batch * 1e3 / stats.mean)
        block = selfcheck_block(stats.mean)
        if req.get("selfcheck") and batch == 1 and block:
            row["overhead"] = harness_overhead(call, block=block, group=stats.calls_per_sample)
        results.append(row)
    peak = _status_mb("VmHWM")
    return {"init_ms": loaded.init_ms, "provider": loaded.provider, "base_rss_mb": base, "peak_rss_mb": peak,
            "cores": cores, "results": results}


def serve(lines, write) -> None:
    for line in lines:
        if not line.strip():
            continue
        t0 = time.perf_counter()
        try:
            out = measure_request(json.loads(line))
        except Exception as e:  # reported to the parent as a failed measurement
            out = {"error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"}
        out["wall_s"] = time.perf_counter() - t0
        _forget()
        out["rss_after_mb"] = rss_mb()  # the parent retires a worker that still holds too much
        write("CT-RESULT " + json.dumps(out) + "\n")


def _forget() -> None:
    """Between measurements: drop the last model and hand its memory back to the system (a long-lived worker
    otherwise keeps the high-water mark of the largest batch it ran: resnet50 at batch 32 left GBs per worker)."""
    if "tensorflow" in sys.modules:
        from models.backend import keras  # deferred: models.backend loads TensorFlow

        keras.backend.clear_session()
    gc.collect()
    release_free_memory()


def release_free_memory() -> None:
    """glibc keeps freed heap for reuse; malloc_trim(0) returns it to the system (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb() -> float | None:
    return _status_mb("VmRSS")


def die_with_parent() -> None:
    """A sweep killed with SIGKILL cannot stop its children: have the kernel do it (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    die_with_parent()

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    serve(sys.stdin, write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
