"""User models in forms the zoo does not have: Keras 3 dict inputs, GroupNormalization, Keras 3's hard_swish,
input names a TFLite signature cannot carry. Each once failed a command outright; each is built here."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hostile import assert_one_line_error


def _fit_save(model, x, y, path, epochs=4):
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    model.save(path)
    np.savez(path.with_suffix(".npz"), **(x if isinstance(x, dict) else {"x": x}), y=y)
    return path, path.with_suffix(".npz")


def _two_inputs(n=300, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    image = rng.integers(0, 60, (n, 8, 8, 1)).astype("float32")
    for i, q in enumerate(y):
        image[i, (q // 2) * 4:(q // 2) * 4 + 4, (q % 2) * 4:(q % 2) * 4 + 4, 0] += 150
    table = (rng.normal(size=(n, 3)) + (y[:, None] == np.arange(3))).astype("float32")
    return {"image": image, "table": table}, y


@pytest.fixture(scope="module")
def dict_model(tmp_path_factory):
    """Keras 3, keras.Model({"image": a, "table": b}, ...) with GroupNormalization, raw 0..255 pixels."""
    import keras  # Keras 3

    keras.utils.set_random_seed(1)
    a, b = keras.Input((8, 8, 1), name="image"), keras.Input((3,), name="table")
    h = keras.layers.Conv2D(8, 3, activation="relu")(keras.layers.Rescaling(1 / 255.0)(a))
    h = keras.layers.GroupNormalization(groups=4)(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    t = keras.layers.UnitNormalization()(keras.layers.Dense(8, activation="relu")(b))
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.Concatenate()([h, t]))
    x, y = _two_inputs()
    return _fit_save(keras.Model({"image": a, "table": b}, out), x, y,
                     tmp_path_factory.mktemp("dict") / "two_inputs.keras", epochs=8)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_keras3_dict_inputs_with_group_norm_export_int8(dict_model, cli, tmp_path, fmt):
    path, data = dict_model
    out = tmp_path / f"m.{fmt}"
    r = cli("export", fmt, path, "--data", data, "--quantize", "int8", "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.exists()
    if fmt == "tflite":  # its tf_keras lowering fails TFLite's int8 calibration (BROADCAST_TO)
        assert "GroupNormalization computed from its moments for int8" in r.stdout.replace("\n", "")


def _pruned_in_keras3(cli, model_and_data, out):
    """``compress prune`` the user's Keras 3 file, opened back with the user's own Keras."""
    import keras

    path, data = model_and_data
    r = cli("compress", "prune", path, "--data", data, "--sparsity", "0.5", "--epochs", "1", "-o", out)
    assert r.returncode == 0, r.stderr
    return keras.saving.load_model(out)


def test_keras3_dict_inputs_come_back_as_keras3_taking_the_same_dict(dict_model, cli, tmp_path):
    pruned = _pruned_in_keras3(cli, dict_model, tmp_path / "p.keras")
    x, y = _two_inputs(40, seed=9)
    assert pruned.predict(x, verbose=0).shape == (40, 4)


@pytest.fixture(scope="module")
def hard_swish_model(tmp_path_factory):
    """Keras 3 Conv1D with hard_swish (tf_keras has no such activation: the bridge stands in for it)."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = (rng.normal(size=(300, 24, 1)) + np.sin(np.arange(24) * (y[:, None] + 1) / 3)[..., None]).astype("float32")
    model = keras.Sequential([keras.Input((24, 1)), keras.layers.Conv1D(8, 3, activation="hard_swish"),
                              keras.layers.Conv1D(8, 3, activation="hard_sigmoid"),
                              keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(3, activation="softmax")])
    return _fit_save(model, x, y, tmp_path_factory.mktemp("hs") / "hard_swish.keras")


def test_hard_swish_model_through_a_technique_comes_back_with_keras3_activations(hard_swish_model, cli, tmp_path):
    pruned = _pruned_in_keras3(cli, hard_swish_model, tmp_path / "p.keras")
    activations = [layer.get_config().get("activation") for layer in pruned.layers]
    assert [a for a in activations if a][:2] == ["hard_silu", "hard_sigmoid"], activations


def test_auto_runs_techniques_on_a_hard_swish_model(hard_swish_model, tmp_path):
    """The techniques' intermediate files name the toolkit's own activation stand-ins: safe mode loads them."""
    from compress.auto.search import AutoSpec, auto
    from models.subject import resolve

    path, data = hard_swish_model
    result = auto(resolve(str(path), data=str(data)), AutoSpec(tmp_path, max_drop=0.05, runtimes=("litert",),
                                                               techniques=("prune50",), resamples=200))
    pruned = [c for c in result.candidates if c.technique == "prune50"]
    assert pruned and all(c.status == "scored" for c in pruned), [c.reason for c in pruned]


@pytest.mark.parametrize("name", ["in put", "in:0"])
def test_input_name_a_tflite_signature_cannot_carry_is_renamed_in_the_file(tmp_path, cli, name):
    import keras

    from export import runtime

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(200, 6)).astype("float32"), rng.integers(0, 2, 200)
    model = keras.Sequential([keras.Input((6,), name=name), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    path, data = _fit_save(model, x, y, tmp_path / "odd.keras", epochs=1)
    r = cli("export", "tflite", path, "--data", data, "-o", tmp_path / "odd.tflite")
    assert r.returncode == 0, r.stderr
    assert f"the input {name!r} is named" in r.stdout.replace("\n", "")
    loaded = runtime.load(tmp_path / "odd.tflite")
    assert loaded.predict(x[:3]).shape == (3, 2)
    meta = json.loads((tmp_path / "odd.tflite.json").read_text())
    assert meta["notes"] and any("TFLite signatures cannot carry" in n for n in meta["notes"])


def test_several_inputs_a_signature_cannot_carry_are_one_line_naming_them(tmp_path, cli):
    import keras

    a, b = keras.Input((3,), name="left side"), keras.Input((3,), name="right")
    model = keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()([a, b])))
    x = {"left side": np.zeros((40, 3), "float32"), "right": np.ones((40, 3), "float32")}
    path, data = _fit_save(model, x, np.zeros(40, "int64"), tmp_path / "two.keras", epochs=1)
    r = cli("export", "tflite", path, "--data", data, "-o", tmp_path / "two.tflite")
    assert_one_line_error(r, "'left side'", "rename those keras.Input layers")
    assert not (tmp_path / "two.tflite").exists()


def test_a_result_keras3_cannot_read_back_names_the_cause_not_the_config(monkeypatch):
    from models.engines import keras3 as bridge
    from models.backend import keras

    def refuse(*args, **kwargs):
        raise TypeError("Error when deserializing class 'Conv1D' using config={'name': 'c', " + "'x': 1, " * 80
                        + "}.\n\nException encountered: Could not locate function 'my_act'.")

    monkeypatch.setattr(bridge.keras3().saving, "load_model", refuse)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(bridge.BridgeError, match="Could not locate function 'my_act'"):
        bridge.to_keras3(model)
