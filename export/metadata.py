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
    entry.key, entry.value = "ct_metadata", json.dumps(meta, sort_keys=True)
    return proto.SerializeToString()
