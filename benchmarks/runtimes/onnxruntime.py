"""ONNX Runtime with one execution provider (CPU, CUDA or TensorRT)."""
from __future__ import annotations

import time
from importlib import metadata

from export import runtime

from benchmarks.runtimes.loaded import Loaded

# distributions that all install the one `onnxruntime` module: exactly one of them may be installed
BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-qnn")
GPU_SETUP = "`make gpu` installs the GPU builds in place of the CPU ones"


def installed_builds() -> dict[str, str]:
    """{distribution: version} of the ONNX Runtime builds pip has installed."""
    found = {}
    for name in BUILDS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def describe_build(builds: dict[str, str], providers: list[str] | None) -> str:
    """One line for `benchmarks run`: which ONNX Runtime build is installed and the providers it offers; two
    builds over one module (e.g. onnxruntime beside onnxruntime-gpu) are said to be a broken install."""
    names = ", ".join(f"{name} {version}" for name, version in builds.items()) or "no ONNX Runtime build"
    if len(builds) > 1:
        return (f"ONNX Runtime: {names} are installed over one `onnxruntime` module (a broken install; ONNX "
                f"Runtime supports one build at a time): {GPU_SETUP}")
    if providers is None:
        return f"ONNX Runtime: {names}, cannot be imported"
    return f"ONNX Runtime: {names}, providers {', '.join(providers)}"


def build_line() -> str:
    try:
        import onnxruntime  # guarded: a library that fails to import is reported, not raised

        providers = list(onnxruntime.get_available_providers())
    except (ImportError, AttributeError):  # AttributeError: the module a removed second build left broken
        providers = None
    return describe_build(installed_builds(), providers)


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
    import onnxruntime  # deferred: ONNX Runtime

    if provider not in onnxruntime.get_available_providers():
        return (f"{provider} is not in this onnxruntime build's providers "
                f"({', '.join(onnxruntime.get_available_providers())}); on an NVIDIA machine {GPU_SETUP}")
    return None


def load(path, threads: int | None = None, provider: str = "CPUExecutionProvider") -> Loaded:
    t0 = time.perf_counter()
    model = runtime.load(path, providers=[provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider"
                                                      else []), threads=threads)
    if model.providers[0] != provider:
        raise RuntimeError(f"{provider} could not be used (session fell back to {model.providers[0]})")
    return Loaded(model.predict, model.bind, (time.perf_counter() - t0) * 1e3, provider=provider)
