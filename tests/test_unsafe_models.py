"""Safe mode (the default) runs and reads nothing from a model file the user brings: a SavedModel whose graph
touches the host, a layer config that names a host path, and a foreign .onnx/.tflite that hangs or crashes its
runtime are each refused with one line (exit 2) before anything executes them; --unsafe is the way through."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hostile import assert_one_line_error, rezip, zip_members

from export import probe as probe_mod
from models.backend import keras as tfk
from models.backend import tf
from models.errors import UserError
from models.loading import load_model_file
from models.safety import layer_refusal, savedmodel_refusal


@pytest.fixture(autouse=True)
def _fresh_layer_names():
    """Models built here must not shift the layer names (conv2d_3...) that later tests in the session expect."""
    yield
    from models.engines.keras3 import keras3

    tfk.backend.clear_session()
    keras3().backend.clear_session()


# ------------------------------------------------------------------------------- 1. SavedModel graphs: the ops


def _hostile(kind: str, target: Path, secret: Path):
    """A body for the serving signature that touches the host in one way; the op type safe mode must name."""

    def write_file(x):
        tf.io.write_file(str(target), "pwned")
        return x

    def read_file(x):
        return x + tf.cast(tf.strings.length(tf.io.read_file(str(secret))), tf.float32)

    def print_to_file(x):
        tf.print(x, output_stream=f"file://{target}")
        return x

    def save_v2(x):  # a checkpoint op in the call path (not the saver's own functions): writes target.index
        tf.raw_ops.SaveV2(prefix=str(target), tensor_names=["x"], shape_and_slices=[""], tensors=[x])
        return x

    def write_in_loop(x):  # inside a While body: a function the signature reaches through an attr
        def body(i, y):
            tf.io.write_file(str(target), "pwned")
            return i + 1, y * 2.0

        return tf.while_loop(lambda i, y: i < 2, body, [tf.constant(0), x])[1]

    def py_function(x):
        return x + tf.py_function(lambda: np.float32(target.write_text("pwned") * 0), [], tf.float32)

    return {"write_file": (write_file, "WriteFile"), "read_file": (read_file, "ReadFile"),
            "print_to_file": (print_to_file, "PrintV2"), "save_v2": (save_v2, "SaveV2"),
            "write_in_loop": (write_in_loop, "WriteFile"), "py_function": (py_function, "EagerPyFunc")}[kind]


def _plain_savedmodel(path: Path, body) -> Path:
    """A SavedModel with no Keras metadata and no Python: a tf.Module with one variable and a signature."""

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.ones((3, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(body(x), self.w)}

    module = Module()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.mark.parametrize("kind", ["write_file", "read_file", "print_to_file", "save_v2", "write_in_loop",
                                  "py_function"])
def test_savedmodel_whose_graph_touches_the_host_is_refused_before_it_runs(kind, tmp_path, cli):
    target, secret = tmp_path / "written-by-the-model", tmp_path / "secret.txt"
    secret.write_text("s3cret")
    body, op = _hostile(kind, target, secret)
    saved = _plain_savedmodel(tmp_path / "sm", body)
    assert not list(tmp_path.glob(target.name + "*")), "building the file ran its op"
    out = tmp_path / "out.onnx"
    res = cli("export", "onnx", saved, "-o", out)
    assert_one_line_error(res, str(saved), op, "node '", "--unsafe")
    assert not list(tmp_path.glob(target.name + "*")), "safe mode ran the graph's host op"
    assert not out.exists() and "s3cret" not in res.stdout + res.stderr


def _small_tf_keras():
    inp = tfk.Input((6, 3), name="x")
    h = tfk.layers.LSTM(4)(inp)
    return tfk.Model(inp, tfk.layers.Dense(2, activation="softmax")(h))


def _small_keras3():
    from models.engines.keras3 import keras3

    k3 = keras3()
    inp = k3.Input((6, 3), name="x")
    h = k3.layers.Conv1D(4, 3, activation="gelu")(inp)
    h = k3.layers.LayerNormalization()(k3.layers.GlobalAveragePooling1D()(h))
    return k3.Model(inp, k3.layers.Dense(2, activation="softmax")(h))


@pytest.mark.parametrize("how", ["tf_keras model.save", "tf.saved_model.save", "keras3 model.export"])
def test_savedmodels_the_toolkit_handles_still_load_in_safe_mode(how, tmp_path):
    """Every TF2 SavedModel has SaveV2/RestoreV2/MergeV2Checkpoints in its saver's functions: allowed there."""
    saved = tmp_path / "sm"
    if how == "tf_keras model.save":
        _small_tf_keras().save(saved, save_format="tf")
    elif how == "tf.saved_model.save":
        tf.saved_model.save(_small_tf_keras(), str(saved))
    else:
        _small_keras3().export(str(saved), verbose=False)
    assert savedmodel_refusal(saved) is None
    model = load_model_file(saved).model  # safe mode
    assert np.asarray(model(np.zeros((1, 6, 3), np.float32))).shape[-1] == 2


@pytest.mark.parametrize("name", ["transformer", "lstm_classifier", "resnet"])
def test_zoo_savedmodels_hold_only_allowed_ops(name, tmp_path):
    from models import registry

    spec = registry.get(name)
    spec.build(dict(spec.resolve_config(tiny=True))).save(tmp_path / "sm", save_format="tf")
    assert savedmodel_refusal(tmp_path / "sm") is None


# ------------------------------------------------------------------------- 2. layer configs that name host paths


def _lookup_model(impl: str, layer: str):
    if impl == "keras3":
        from models.engines.keras3 import keras3

        K = keras3()
    else:
        K = tfk
    if layer == "IntegerLookup":
        inp = K.Input((1,), dtype="int64", name="ids")
        return K.Model(inp, K.layers.IntegerLookup(vocabulary=[3, 5, 7], name="lookup")(inp))
    inp = K.Input((1,), dtype="string", name="text")
    lookup = (K.layers.StringLookup(vocabulary=["a", "b"], name="lookup") if layer == "StringLookup"
              else K.layers.TextVectorization(vocabulary=["a", "b"], output_sequence_length=3, name="lookup"))
    return K.Model(inp, lookup(inp))


def _set_vocabulary(path: Path, value: str) -> None:
    """Rewrite the lookup layer's ``vocabulary`` in a .keras (config.json) or .h5 (model_config) file."""

    def edit(config):
        for layer in config["config"]["layers"]:
            if layer["config"].get("name") == "lookup":
                layer["config"]["vocabulary"] = value
                return json.dumps(config)
        raise AssertionError("no lookup layer")

    if path.suffix == ".keras":
        files = zip_members(path.read_bytes())
        files["config.json"] = edit(json.loads(files["config.json"])).encode()
        path.write_bytes(rezip(files))
    else:
        import h5py

        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = edit(json.loads(f.attrs["model_config"]))


@pytest.mark.parametrize("impl,suffix,layer", [("tf_keras", ".keras", "StringLookup"),
                                               ("tf_keras", ".h5", "StringLookup"),
                                               ("tf_keras", ".keras", "TextVectorization"),
                                               ("tf_keras", ".h5", "IntegerLookup"),
                                               ("keras3", ".keras", "StringLookup"),
                                               ("keras3", ".h5", "StringLookup"),
                                               ("keras3", ".keras", "IntegerLookup")])
def test_layer_config_naming_a_host_file_is_refused(impl, suffix, layer, tmp_path, cli):
    path = tmp_path / f"m{suffix}"
    _lookup_model(impl, layer).save(path)
    try:  # a vocabulary in the file itself is not refused (Keras 3 lookup layers may not bridge to tf_keras)
        load_model_file(path)
    except UserError as e:
        assert "safe mode" not in str(e), e
    secret = tmp_path / "secret.txt"
    secret.write_text("\n".join(["11", "13", "s3cret"] if layer == "IntegerLookup" else ["s3cret", "token"]) + "\n")
    _set_vocabulary(path, str(secret))
    res = cli("export", "onnx", path, "-o", tmp_path / "out.onnx")
    assert_one_line_error(res, str(path), "layer 'lookup'", f"vocabulary={str(secret)!r}", "--unsafe")
    assert not (tmp_path / "out.onnx").exists() and "s3cret" not in res.stdout + res.stderr


def test_a_vocabulary_fifo_is_never_opened(tmp_path, cli):
    """A FIFO as the vocabulary blocked the loader: safe mode refuses it from the config without opening it."""
    path = tmp_path / "m.keras"
    _lookup_model("tf_keras", "StringLookup").save(path)
    fifo = tmp_path / "vocab.fifo"
    os.mkfifo(fifo)
    _set_vocabulary(path, str(fifo))
    opened, stop = [], threading.Event()

    def writer():  # connects only if a reader opened the FIFO (so a loader that reads it cannot block forever)
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader
                time.sleep(0.05)
                continue
            opened.append(True)
            os.write(fd, b"a\nb\n")
            os.close(fd)
            return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        res = cli("export", "onnx", path, "-o", tmp_path / "out.onnx")
    finally:
        stop.set()
        thread.join(5)
    assert not opened, "safe mode opened the vocabulary FIFO"
    assert_one_line_error(res, "vocabulary=", str(fifo), "--unsafe")


def test_layer_refusal_reads_configs_only():
    assert "filepath='/srv/model'" in layer_refusal(
        {"class_name": "TFSMLayer", "config": {"name": "t", "filepath": "/srv/model"}})
    assert layer_refusal({"class_name": "Custom", "config": {"name": "c", "source": "../../etc/shadow"}})
    assert layer_refusal({"class_name": "Custom", "config": {"name": "c", "url": "gs://bucket/vocab.txt"}})
    benign = {"class_name": "StringLookup", "config": {"name": "s", "vocabulary": ["/", "a/b", "../x"],
                                                       "oov_token": "[UNK]", "output_mode": "int"}}
    assert layer_refusal(benign) is None


def test_zoo_configs_name_no_host_paths():
    from models import registry

    for spec in registry.specs():
        stack = [spec.build(dict(spec.resolve_config(tiny=True))).get_config()]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                assert layer_refusal(node) is None, (spec.name, node.get("class_name"))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


# ------------------------------------------------------------------ 3. foreign .onnx/.tflite: probed in a child


def _spinning_onnx(path: Path, trips: int = 2 ** 62) -> Path:
    """An ONNX Loop of ``trips`` iterations (2^62: runs until killed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["x_in", "one"], ["x_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((1, 4), np.float32), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "spin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(trips, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _in_thread(fn, timeout: float):
    """fn() in a daemon thread; its result, or a failure if it is still running after ``timeout`` seconds (a model
    run in this process with no timeout: the thread is abandoned)."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout:.0f} s: the file ran in this process, no timeout"
    return box[0]


def test_profile_of_a_foreign_onnx_that_never_ends_is_a_timeout(tmp_path, cli, monkeypatch):
    from benchmarks.profiling import command

    monkeypatch.setattr(command, "probe", partial(probe_mod.probe, timeout=5))  # the name the command calls
    path = _spinning_onnx(tmp_path / "spin.onnx")
    res = _in_thread(lambda: cli("benchmarks", "profile", path, "--runs", "1", "--out", tmp_path / "res"), 120)
    assert_one_line_error(res, "did not finish", str(path))
    assert not (tmp_path / "res").exists()


def test_profile_of_a_foreign_tflite_that_crashes_its_runtime_is_an_error(tmp_path, cli, monkeypatch):
    code = ("import os, signal, sys\nimport export.probe_child as p\n"
            "p.probe_in_process = lambda path, providers=None, batch_check=False: os.kill(os.getpid(), signal.SIGSEGV)\n"
            "sys.exit(p.main())\n")
    monkeypatch.setattr(probe_mod, "child_command", lambda: [sys.executable, "-c", code])
    monkeypatch.setattr(probe_mod, "_memo", {})
    inp = tfk.Input((4,), name="x")
    model = tfk.Model(inp, tfk.layers.Dense(2)(inp))
    path = tmp_path / "boom.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    res = _in_thread(lambda: cli("benchmarks", "profile", path, "--runs", "1", "--out", tmp_path / "res"), 120)
    assert_one_line_error(res, "the LiteRT runtime crashed loading", str(path), "(signal 11)")
    assert not (tmp_path / "res").exists()
