"""TFLite metadata is read from the model's metadata table through the flatbuffer schema, not by a byte search."""
import json

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils

import ct_runtime
from export.quantize.ptq import QuantRecipe
from conftest import tiny_trained
from ct_runtime.metadata import LEGACY_TFLITE_PREFIX, METADATA_KEY, tflite_metadata
from export import exporter
from models.subject import Subject


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny mlp exported by the toolkit, without its sidecar: (file bytes, the metadata the toolkit wrote)."""
    t = tiny_trained("mlp")
    path = tmp_path_factory.mktemp("meta") / "mlp.tflite"
    exporter.export(Subject("mlp", t.load(), t.path, t.spec, t.config, t.splits(), t.seed), QuantRecipe("tflite"), path)
    sidecar = path.with_name("mlp.tflite.json")
    meta = json.loads(sidecar.read_text())
    meta.pop("validation")  # the export's own validation figures are kept in the sidecar only (export.exporter)
    sidecar.unlink()
    return path.read_bytes(), meta


def _entries(data: bytes) -> dict:
    model = fb.Model.GetRootAs(data, 0)
    return {model.Metadata(i).Name().decode(): model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
            for i in range(model.MetadataLength())}


def _rewrite(data: bytes, payload: bytes | None, *, buffer_offset: int = 0) -> bytes:
    """The model with its ``ct_metadata`` entry replaced: by ``payload`` (a new buffer), or by none at all.

    ``buffer_offset`` points the entry that many buffers past its own (out of range: a corrupt table).
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    model.metadata = [m for m in model.metadata or [] if m.name.decode() != METADATA_KEY]
    if payload is not None:
        buffer = fb.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = fb.MetadataT()
        entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1 + buffer_offset
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_export_writes_bare_json_into_the_metadata_table(exported):
    data, meta = exported
    entries = _entries(data)
    assert json.loads(entries[METADATA_KEY]) == meta  # what any flatbuffer reader finds, no marker to strip
    assert tflite_metadata(data) == meta


def test_files_with_the_legacy_marker_still_read(exported, tmp_path):
    data, meta = exported
    legacy = _rewrite(data, LEGACY_TFLITE_PREFIX + json.dumps(meta).encode())
    assert _entries(legacy)[METADATA_KEY].startswith(b"CT-METADATA{")
    (tmp_path / "legacy.tflite").write_bytes(legacy)
    assert ct_runtime.read_metadata(tmp_path / "legacy.tflite") == meta


def test_json_outside_the_metadata_table_is_not_metadata(exported, tmp_path):
    """The old reader searched the bytes for the marker; the table is the only place read now."""
    data, meta = exported
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(_rewrite(data, None)))
    stray = fb.BufferT()
    stray.data = np.frombuffer(LEGACY_TFLITE_PREFIX + json.dumps(meta).encode(), dtype=np.uint8)
    model.buffers.append(stray)
    path = tmp_path / "stray.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    assert LEGACY_TFLITE_PREFIX in path.read_bytes()
    model = ct_runtime.load(path)
    assert model.metadata == {} and model.predict(np.zeros((2, 4), np.float32)).shape == (2, 3)


@pytest.mark.parametrize("case", ["not json", "json list", "buffer out of range", "truncated file"])
def test_bad_metadata_is_dropped_and_the_model_still_loads(case, exported, tmp_path):
    data, meta = exported
    variant = {"not json": lambda: _rewrite(data, b"\xff{not json"),
               "json list": lambda: _rewrite(data, b"[1, 2]"),
               "buffer out of range": lambda: _rewrite(data, json.dumps(meta).encode(), buffer_offset=5),
               "truncated file": lambda: data[:64]}[case]()
    assert tflite_metadata(variant) == {}
    if case != "truncated file":
        path = tmp_path / "bad.tflite"
        path.write_bytes(variant)
        model = ct_runtime.load(path)
        assert model.metadata == {} and model.predict(np.zeros((1, 4), np.float32)).shape == (1, 3)
