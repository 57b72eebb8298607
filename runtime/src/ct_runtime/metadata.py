"""The toolkit's metadata of an exported file: from its JSON sidecar, or from inside the file.

Inside the file it lives where each format keeps metadata: ONNX ``metadata_props`` (read from the ONNX Runtime
session, see :mod:`ct_runtime.onnx_model`) and the TFLite model's metadata table, an entry named ``ct_metadata``
whose buffer holds the JSON (read here through the TFLite flatbuffer schema that ai-edge-litert ships). Files come
from anywhere, so a malformed field is dropped rather than trusted.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

METADATA_KEY = "ct_metadata"  # ONNX metadata_props key and TFLite metadata table entry name
# Toolkit versions before the runtime had its own distribution wrote this before the JSON in the TFLite entry.
LEGACY_TFLITE_PREFIX = b"CT-METADATA"
_MAX_TFLITE_ENTRIES = 1024  # a corrupt table length must not mean a billion iterations


def clean_metadata(meta) -> dict:
    """Keep only well-formed fields ({} if the value is not a dict)."""
    if not isinstance(meta, dict):
        return {}
    meta = dict(meta)
    batch = meta.get("batch")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        meta["batch"] = None
    for key in ("inputs", "outputs"):
        part = meta.get(key)
        if part is None:
            continue
        names = part.get("names") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            meta[key] = {**part, "names": []} if isinstance(part, dict) else {}
    return meta


def parse_json(raw: bytes | str) -> dict:
    """Metadata JSON (bytes may carry the legacy TFLite prefix); {} when it is not a JSON object."""
    if isinstance(raw, bytes):
        raw = raw.removeprefix(LEGACY_TFLITE_PREFIX).decode("utf-8", errors="replace")
    try:
        return clean_metadata(json.loads(raw))
    except (ValueError, RecursionError):
        return {}


def tflite_metadata(data: bytes) -> dict:
    """The ``ct_metadata`` entry of a TFLite model's metadata table ({} if absent, unreadable or no schema)."""
    try:
        from ai_edge_litert.schema_py_generated import Model
    except ImportError:  # an ONNX-only install: it cannot run the file either
        return {}
    try:
        if not Model.ModelBufferHasIdentifier(data, 0):
            return {}
        model = Model.GetRootAs(data, 0)
        for i in range(min(model.MetadataLength(), _MAX_TFLITE_ENTRIES)):
            entry = model.Metadata(i)
            if entry.Name() != METADATA_KEY.encode() or not 0 <= entry.Buffer() < model.BuffersLength():
                continue
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer: (offset, size) in the file
                return parse_json(bytes(data[buffer.Offset():buffer.Offset() + buffer.Size()]))
            if buffer.DataLength():
                return parse_json(buffer.DataAsNumpy().tobytes())
    except Exception:  # noqa: BLE001  (a corrupt flatbuffer raises whatever its offsets lead to)
        return {}
    return {}


def read_metadata(path: str | os.PathLike) -> dict:
    """From the JSON sidecar (``model.tflite.json``), else from inside a ``.tflite`` file, else {}.

    An ``.onnx`` file's own metadata is read when its session is created (ONNX Runtime parses the file anyway).
    """
    sidecar = Path(str(path) + ".json")
    if sidecar.exists():
        try:
            return clean_metadata(json.loads(sidecar.read_text()))
        except (OSError, ValueError, RecursionError):  # unreadable sidecar: the file's own copy may still be good
            pass
    if str(path).lower().endswith(".tflite"):
        try:
            return tflite_metadata(Path(path).read_bytes())
        except OSError:
            return {}
    return {}
