"""Metadata that travels with every exported file (JSON sidecar; inside the file where the format allows)."""
from __future__ import annotations

import json
from importlib import metadata as pkg_metadata

import numpy as np
from ct_runtime.metadata import METADATA_KEY  # one name, shared with the reader

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
    import onnx  # deferred: onnx

    proto = onnx.load_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
    return proto.SerializeToString()


def embed_tflite(data: bytes, meta: dict) -> bytes:
    """Add the metadata JSON as the ``ct_metadata`` entry of the TFLite model's metadata table.

    The entry's buffer holds the bare JSON; ``ct_runtime.metadata.tflite_metadata`` reads it back through the same
    flatbuffer schema (ai-edge-litert's), so writer and reader agree on one public format.
    """
    from ai_edge_litert import schema_py_generated as fb  # deferred: LiteRT
    from ai_edge_litert.tools import flatbuffer_utils  # deferred: LiteRT

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantization_of(tflite_data: bytes) -> dict:
    """Scale and zero point of each quantized input/output of a TFLite model (empty for float I/O)."""
    from ai_edge_litert.interpreter import Interpreter  # deferred: LiteRT

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
