"""Where a measurement was taken: CPU, library versions, git revision."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata


@functools.lru_cache(None)
def cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(None)
def host() -> str:
    flags = ""
    try:
        text = open("/proc/cpuinfo").read()
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f" {f}" in text)
    except OSError:
        pass
    return f"{platform.node()} | {cpu()} | {os.cpu_count()} cores | {flags}"


@functools.lru_cache(None)
def versions() -> dict:
    out = {}
    for pkg in ("tensorflow", "tf_keras", "tensorflow-model-optimization", "tf2onnx", "onnx", "onnxruntime",
                "ai-edge-litert", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


@functools.lru_cache(None)
def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(__file__), timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
