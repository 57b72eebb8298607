"""Hostile or stale metadata (sidecar or inside the file) never breaks ``ct_runtime``'s contract.

Metadata is never needed to run a file, so what is unusable, malformed, stale or contradicts the file is ignored
with a ``ct_runtime.MetadataWarning`` (a UserWarning) and the model uses what the file declares
(``ct_runtime.metadata`` has the contract). Sidecars that are not regular files are read in a child process: a
FIFO must not block ``load`` and ``/dev/zero`` must not be read until memory runs out.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

import ct_runtime
from export.quantize.ptq import QuantRecipe
from conftest import ROOT, tiny_trained
from ct_runtime.metadata import METADATA_KEY
from export import exporter
from models.subject import Subject
from test_runtime_metadata import _rewrite

X = np.array([[1.0, -2.0, 3.0, -4.0], [-1.0, 2.0, -3.0, 4.0]], np.float32)


def two_output_onnx(path, meta=None, outputs=("a", "b")):
    """A tiny ONNX file: input x [n, 4], outputs a = relu(x), b = -x; ``meta`` goes into its metadata_props."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 4]) for name in outputs]
    nodes = [helper.make_node(op, ["x"], [name]) for op, name in zip(("Relu", "Neg"), outputs)]
    model = helper.make_model(helper.make_graph(nodes, "two", [x], outs),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if meta is not None:
        helper.set_model_props(model, {METADATA_KEY: meta if isinstance(meta, str) else json.dumps(meta)})
    path.write_bytes(model.SerializeToString())
    return path


def sidecar(path, doc):
    p = path.with_name(path.name + ".json")
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def assert_both_outputs(out):
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_array_equal(out[0], np.maximum(X, 0))
    np.testing.assert_array_equal(out[1], -X)


def metadata_warning(match):
    return pytest.warns(UserWarning, match=match)


@pytest.fixture(scope="module")
def mlp_tflite(tmp_path_factory):
    """The tiny mlp exported by the toolkit (validated: its sidecar records the file's SHA-256), and the sidecar."""
    t = tiny_trained("mlp")
    path = tmp_path_factory.mktemp("hostile-meta") / "mlp.tflite"
    exporter.export(Subject("mlp", t.load(), t.path, t.spec, t.config, t.splits(), t.seed), QuantRecipe("tflite"), path)
    return path.read_bytes(), json.loads(path.with_name("mlp.tflite.json").read_text())


def test_valid_sidecar_is_used_whole_and_quietly(mlp_tflite, tmp_path, recwarn):
    """Non-regression: the exporter's own sidecar (hash and all) is still the metadata, with no warning."""
    data, meta = mlp_tflite
    path = tmp_path / "mlp.tflite"
    path.write_bytes(data)
    sidecar(path, meta)
    model = ct_runtime.load(path)
    assert model.metadata == meta and meta["validation"]["file_sha256"]
    assert model.predict(np.zeros((5, 4), np.float32)).shape == (5, 3)
    assert ct_runtime.read_metadata(path) == meta
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("where", ["sidecar", "inside the file"])
def test_null_outputs_are_ignored_not_an_attribute_error(where, tmp_path):
    doc = {"model": "two", "outputs": None}
    path = two_output_onnx(tmp_path / "two.onnx", meta=doc if where == "inside the file" else None)
    if where == "sidecar":
        sidecar(path, doc)
    with metadata_warning("outputs: not an object") as caught:
        model = ct_runtime.load(path)
    assert all(issubclass(w.category, ct_runtime.MetadataWarning) for w in caught)
    assert_both_outputs(model.predict(X))
    assert model.output_names == ["a", "b"] and "outputs" not in model.metadata
    assert model.metadata == ({} if where == "sidecar" else {"model": "two"})


def test_null_inputs_of_a_tflite_sidecar_do_not_fail_the_load(mlp_tflite, tmp_path):
    data, meta = mlp_tflite
    path = tmp_path / "mlp.tflite"
    path.write_bytes(data)
    sidecar(path, {**meta, "inputs": None})
    with metadata_warning("inputs: not an object"):
        model = ct_runtime.load(path)
    assert model.input_names == ["features"] and model.metadata["inputs"] == meta["inputs"]  # the file's own copy
    assert model.predict(np.zeros((2, 4), np.float32)).shape == (2, 3)


@pytest.mark.parametrize("where", ["sidecar", "inside the file"])
def test_huge_batch_is_ignored_not_a_memory_error(where, mlp_tflite, tmp_path):
    data, meta = mlp_tflite
    path = tmp_path / "mlp.tflite"
    hostile = {**meta, "batch": 10**12}
    if where == "sidecar":
        path.write_bytes(data)
        sidecar(path, hostile)
    else:
        hostile.pop("validation")
        path.write_bytes(_rewrite(data, json.dumps(hostile).encode()))
    with metadata_warning("batch: "):
        model = ct_runtime.load(path)
    assert model.metadata.get("batch") is None
    assert model.predict(np.zeros((3, 4), np.float32)).shape == (3, 3)


def test_batch_that_contradicts_the_file_is_dropped(tmp_path):
    """Well-formed but not the file's: a dynamic-batch file is not chunked by a batch it does not have."""
    path = two_output_onnx(tmp_path / "two.onnx", meta={"batch": 7, "outputs": {"names": ["b", "a"]}})
    with metadata_warning(r"batch: 7, the file's inputs lead with \[None\]"):
        model = ct_runtime.load(path)
    assert model.metadata == {"outputs": {"names": ["b", "a"]}} and model.output_names == ["b", "a"]


@pytest.mark.parametrize("hash_recorded", [True, False])
def test_stale_sidecar_of_a_one_output_model_is_ignored(hash_recorded, tmp_path):
    """The sidecar of an earlier one-output export next to a two-output file: both outputs, the file's metadata."""
    own = {"model": "two", "outputs": {"names": ["a", "b"], "shapes": [[None, 4], [None, 4]]}}
    path = two_output_onnx(tmp_path / "two.onnx", meta=own)
    stale = {"model": "one", "outputs": {"names": ["a"], "shapes": [[None, 4]]}}
    if hash_recorded:
        stale["validation"] = {"file_sha256": "0" * 64, "runtime": "onnxruntime-cpu"}
    sidecar(path, stale)
    with metadata_warning("stale sidecar" if hash_recorded else r"outputs: names \['a'\], the file's are"):
        model = ct_runtime.load(path)
    assert model.metadata == own
    assert_both_outputs(model.predict(X))
    if hash_recorded:
        with metadata_warning("stale sidecar"):
            assert ct_runtime.read_metadata(path) == {}


def test_output_names_inside_the_file_that_are_not_its_outputs_are_dropped(tmp_path):
    path = two_output_onnx(tmp_path / "two.onnx", meta={"model": "two", "outputs": {"names": ["b"]}})
    with metadata_warning("contradicts the file"):
        model = ct_runtime.load(path)
    assert model.metadata == {"model": "two"}
    assert_both_outputs(model.predict(X))


def test_oversized_sidecar_is_not_read(tmp_path):
    path = two_output_onnx(tmp_path / "two.onnx", meta={"model": "two"})
    sidecar(path, {"model": "huge", "padding": "x" * (2 << 20)})
    with metadata_warning("over the 1048576-byte limit"):
        model = ct_runtime.load(path)
    assert model.metadata == {"model": "two"}


def test_sidecar_that_is_a_directory_is_ignored(tmp_path):
    path = two_output_onnx(tmp_path / "two.onnx", meta={"model": "two"})
    path.with_name("two.onnx.json").mkdir()
    with metadata_warning("a directory, not a regular file"):
        model = ct_runtime.load(path)
    assert model.metadata == {"model": "two"}


CHILD = """
import json, resource, sys, warnings
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # reading /dev/zero must end in a MemoryError, not OOM
import numpy as np
import ct_runtime

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        out = ct_runtime.load(sys.argv[1]).predict(np.ones((2, 4), np.float32))
        result = {"outputs": len(out)}
    except BaseException as e:
        result = {"error": f"{type(e).__name__}: {e}"[:300]}
result["warnings"] = [str(w.message) for w in caught]
print(json.dumps(result))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX FIFOs and /dev/zero")
@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_sidecar_that_is_not_a_regular_file_is_not_read(kind, tmp_path):
    path = two_output_onnx(tmp_path / "two.onnx")
    side = path.with_name("two.onnx.json")
    if kind == "fifo":
        os.mkfifo(side)
    else:
        os.symlink("/dev/zero", side)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime" / "src"), str(ROOT)])}
    try:
        res = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60,
                             env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"load() blocked on a sidecar that is a {kind}")
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result.get("outputs") == 2, result
    expected = "a FIFO" if kind == "fifo" else "a character device"
    assert any(f"{expected}, not a regular file" in w and "\n" not in w for w in result["warnings"]), result
