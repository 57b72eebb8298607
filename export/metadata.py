"""Metadata that travels with every exported file (JSON sidecar; inside the file where the format allows)."""
from __future__ import annotations

import json
from importlib import metadata as pkg_metadata

from models.artifacts import sha256_file


def toolkit_version() -> str:
    try:
        return pkg_metadata.version("keras-compress-toolkit")
    except pkg_metadata.PackageNotFoundError:
        return "0+unknown"


def describe(model, subject, recipe, chain: list[str]) -> dict:
    spec = subject.spec
    return {
        "model": subject.name,
        "format": recipe.format,
        "quantization": recipe.mode,
        "chain": chain,
        "inputs": {"names": [t.name.split(":")[0] for t in model.inputs],
                   "shapes": [[None] + list(t.shape[1:]) for t in model.inputs],
                   "dtypes": [t.dtype.name for t in model.inputs]},
        "outputs": {"names": list(model.output_names),
                    "shapes": [[None] + list(t.shape[1:]) for t in model.outputs]},
        "labels": list(spec.labels) if spec and spec.labels else None,
        "preprocessing": spec.preprocessing if spec else None,
        "task": spec.task if spec else None,
        "source_sha256": sha256_file(subject.path),
        "toolkit_version": toolkit_version(),
    }


def embed_onnx(data: bytes, meta: dict) -> bytes:
    import onnx

    proto = onnx.load_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
    return proto.SerializeToString()


METADATA_KEY = "ct_metadata"
TFLITE_MARKER = b"CT-METADATA"  # export.runtime finds the JSON after this marker without a flatbuffer parser


def embed_tflite(data: bytes, meta: dict) -> bytes:
    """Add the metadata JSON as a named metadata buffer of the TFLite flatbuffer (read back by export.runtime)."""
    from tensorflow.lite.python import schema_py_generated as fb
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    buffer = fb.BufferT()
    buffer.data = list(TFLITE_MARKER + json.dumps(meta, sort_keys=True).encode())
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantization_of(tflite_data: bytes) -> dict:
    """Scale and zero point of each quantized input/output of a TFLite model (empty for float I/O)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_data)
    runner = interpreter.get_signature_runner()
    out = {}
    for kind, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
        for name, d in details.items():
            scale, zero = d["quantization"]
            if scale:
                out.setdefault(kind, {})[name] = {"scale": float(scale), "zero_point": int(zero),
                                                  "dtype": d["dtype"].__name__}
    del runner
    return out
