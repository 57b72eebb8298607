"""Safe mode (the default) runs and reads nothing from a model file the user brings: a SavedModel whose graph
touches the host is refused with one line (exit 2) before anything executes it; --unsafe is the way through."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile import assert_one_line_error

from models.backend import keras as tfk
from models.backend import tf
from models.loading import load_model_file
from models.safety import savedmodel_refusal


@pytest.fixture(autouse=True)
def _fresh_layer_names():
    """Models built here must not shift the layer names (conv2d_3...) that later tests in the session expect."""
    yield
    from models.keras3 import keras3

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
    from models.keras3 import keras3

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
