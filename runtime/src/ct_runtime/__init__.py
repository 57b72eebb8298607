"""Run an exported model without TensorFlow: ``ct_runtime.load(path).predict(inputs)``.

This is the package an app embeds (distribution ``keras-compress-runtime``). It imports numpy, and onnxruntime or
the LiteRT interpreter when a file of that format is loaded. ``.onnx`` runs on ONNX Runtime (a GPU provider when one
is available), ``.tflite`` on LiteRT; int8/uint8 inputs and outputs are (de)quantized with the scale and zero point
stored in the model. Every failure is a :class:`RuntimeModelError` with a one-line reason. Metadata (a sidecar or the
file's own) that is unusable, stale or contradicts the file is ignored with a :class:`MetadataWarning` and the model
uses what the file declares (:mod:`ct_runtime.metadata` has the contract).
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import ExportedModel, first_line
from .errors import MetadataWarning, RuntimeModelError
from .metadata import METADATA_KEY, read_metadata, read_sidecar
from .onnx_model import GPU_PROVIDERS, OnnxModel
from .tflite_model import TFLiteModel

__all__ = ["load", "RuntimeModelError", "MetadataWarning", "read_metadata", "ExportedModel", "OnnxModel", "TFLiteModel",
           "GPU_PROVIDERS", "METADATA_KEY"]


def load(path: str | os.PathLike, *, providers=None, threads: int | None = None, xnnpack: bool = True):
    """Load ``.onnx`` or ``.tflite`` for inference; raises RuntimeModelError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeModelError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise RuntimeModelError(f"{path} is empty")
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".tflite"):
        raise RuntimeModelError(f"{path}: unknown model format {suffix or '(no suffix)'}; expected .onnx or .tflite")
    metadata = read_sidecar(path) or {}  # the file's own copy is read by the model when this is {} or ignored
    try:
        if suffix == ".onnx":
            return OnnxModel(path, metadata, providers=providers, threads=threads)
        return TFLiteModel(path, metadata, threads=threads, xnnpack=xnnpack)
    except RuntimeModelError:
        raise
    except Exception as e:  # a malformed file can trip the bindings themselves (bad UTF-8 names, ...)
        runtime = "ONNX Runtime" if suffix == ".onnx" else "LiteRT"
        raise RuntimeModelError(f"{runtime} cannot load {path}: {type(e).__name__}: {first_line(e)}") from None
