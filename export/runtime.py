"""``from export import runtime``: the toolkit's name for :mod:`ct_runtime`, the runtime distribution.

The loader lives in ``runtime/`` (distribution ``keras-compress-runtime``) so that an app installs numpy +
ONNX Runtime / LiteRT only, never TensorFlow; this module keeps the import path the toolkit and its users have.
"""
from ct_runtime import (GPU_PROVIDERS, METADATA_KEY, ExportedModel, OnnxModel, RuntimeModelError, TFLiteModel, load,
                        read_metadata)

__all__ = ["load", "RuntimeModelError", "read_metadata", "ExportedModel", "OnnxModel", "TFLiteModel",
           "GPU_PROVIDERS", "METADATA_KEY"]
