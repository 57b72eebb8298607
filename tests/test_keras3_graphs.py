"""Keras 3 graphs the tf_keras bridge cannot rebuild are served as Keras 3 traces them (models/engines/native.py).

MobileNetV3Small (its hard_sigmoid writes keras.ops Add/Multiply nodes), a functional graph with ``+``, ``*``,
``keras.ops.mean`` and a reshape between layers, keras_hub's BertBackbone (a subclassed model, loaded in safe mode
without --custom-objects) and a Keras 3 layer of the user's own: each once ended every command with ``KeyError``
(exit 3) or a refusal (exit 2). Now exports convert the function ``model.export`` traces, with parity against the
Keras 3 model; pruning works on the Keras 3 model itself (compress.techniques.magnitude), and the techniques built on
tfmot say in one line which node or layer the bridge could not take.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import user_models
from hostile import assert_one_line_error

pytestmark = pytest.mark.xdist_group("keras3_graphs")  # one worker builds the models (MobileNetV3, BERT) once

HAS_KERAS_HUB = importlib.util.find_spec("keras_hub") is not None
SERVED = "served as Keras 3 traces it"
GRAPHS = ["mobilenet", "ops", pytest.param("bert", marks=pytest.mark.skipif(not HAS_KERAS_HUB,
                                                                            reason="keras-hub is not installed"))]
#: what the bridge names as the reason it could not take each model
WHY = {"mobilenet": "is a keras.ops Add call between layers", "ops": "is a keras.ops Add call between layers",
       "bert": "'bert_backbone' is a subclassed Keras 3 model (BertBackbone)"}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras3_graphs")
    made = {"mobilenet": user_models.mobilenet_v3_small(d), "ops": user_models.ops_graph(d)}
    if HAS_KERAS_HUB:
        made["bert"] = user_models.bert_tiny(d)
    return made


def _inputs(data, n=16):
    loaded = np.load(data)
    keys = [k for k in loaded.files if k != "y"]
    return loaded["x"][:n] if keys == ["x"] else {k: loaded[k][:n] for k in keys}


def _keras3_outputs(path, x):
    from models.engines.keras3 import keras3

    if HAS_KERAS_HUB:
        import keras_hub  # noqa: F401  (registers its classes, as the loader does)
    return np.asarray(keras3().saving.load_model(path)(x, training=False))


def test_the_bridge_names_the_op_node_instead_of_a_key_error(graphs):
    from models.engines.keras3 import BridgeError, keras3, to_tf_keras

    model = keras3().saving.load_model(graphs["ops"][0])
    with pytest.raises(BridgeError, match=r"node '\w+' is a keras.ops Add call between layers \(1 of \d+ such"):
        to_tf_keras(model)


@pytest.mark.parametrize("name", GRAPHS)
def test_exports_convert_the_keras3_function_with_parity(graphs, name, cli, tmp_path):
    from export import runtime

    path, data = graphs[name]
    x = _inputs(data)
    expected = _keras3_outputs(path, x)
    for fmt in ("tflite", "onnx"):
        out = tmp_path / f"m.{fmt}"
        r = cli("export", fmt, path, "--data", data, "-o", out)
        assert r.returncode == 0, r.stderr + r.stdout
        text = r.stdout.replace("\n", " ")
        assert SERVED in text and WHY[name] in text, text
        assert "max abs error" in text and "top-1 agreement with Keras: 1.0000" in text, text
        got = runtime.load(out).predict(x)
        assert np.max(np.abs(np.asarray(got) - expected)) < 1e-4, (fmt, np.max(np.abs(np.asarray(got) - expected)))
        meta = json.loads((tmp_path / f"m.{fmt}.json").read_text())
        assert meta["inputs"]["names"] and meta["outputs"]["names"]


@pytest.mark.parametrize("name", GRAPHS)
def test_int8_tflite_calibrates_on_the_data(graphs, name, cli, tmp_path):
    path, data = graphs[name]
    out = tmp_path / "m.tflite"
    # 1 epoch on random labels: the accuracy is chance either way, so the drop is not judged here
    r = cli("export", "tflite", path, "--data", data, "--quantize", "int8", "--max-drop", "1", "-o", out)
    assert r.returncode == 0, r.stderr + r.stdout
    assert out.exists() and "tflite(int8)" in r.stdout


def test_onnx_int8_and_float16_quantize_the_converted_file(graphs, cli, tmp_path):
    path, data = graphs["ops"]
    for mode in ("int8", "float16"):
        out = tmp_path / f"{mode}.onnx"
        r = cli("export", "onnx", path, "--data", data, "--quantize", mode, "--max-drop", "1", "-o", out)
        assert r.returncode == 0, r.stderr + r.stdout
        assert out.exists()


@pytest.mark.parametrize("name,variant,runtime_name", [("mobilenet", "tflite-fp32", "litert"),
                                                       ("ops", "fp32", "keras"),
                                                       pytest.param("bert", "onnx-fp32", "onnxruntime-cpu",
                                                                    marks=pytest.mark.skipif(not HAS_KERAS_HUB,
                                                                                             reason="no keras-hub"))])
def test_benchmarks_run_measures_it(graphs, name, variant, runtime_name, cli, tmp_path):
    from benchmarks.store import Store

    path, data = graphs[name]
    r = cli("benchmarks", "run", "--models", path, "--data", data, "--variants", variant, "--runtimes", runtime_name,
            "--batch", "1", "--threads", "1", "--quick", "--out", tmp_path / "res")
    assert r.returncode == 0, r.stderr + r.stdout
    (row,) = Store(tmp_path / "res" / "results.db").rows()
    assert row["status"] == "ok", row["reason"]
    assert row["p50_ms"] > 0 and row["metric"] is not None


@pytest.mark.parametrize("name", GRAPHS)
def test_prune_works_on_the_keras3_model_itself(graphs, name, cli, tmp_path):
    """Pruning needs no tfmot here: compress.techniques.magnitude masks the Keras 3 model's own kernels (nested and
    composite layers included) and the result is a Keras 3 file of the same graph."""
    path, data = graphs[name]
    out = tmp_path / "p.keras"
    r = cli("compress", "prune", path, "--data", data, "--epochs", "1", "--max-drop", "1", "-o", out)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "sparsity of the pruned layers: 50.0%" in r.stdout
    from models.engines.keras3 import keras3

    if HAS_KERAS_HUB:
        import keras_hub  # noqa: F401  (registers its classes, as the loader does)
    back = keras3().saving.load_model(out)
    from compress.techniques import magnitude

    rows = magnitude.sparsity_report(back)
    assert sum(r.zeros for r in rows) / sum(r.weights for r in rows) == pytest.approx(0.5, abs=0.01)
    x = _inputs(data, 4)
    assert np.all(np.isfinite(np.asarray(back(x, training=False))))


@pytest.mark.parametrize("technique", [["cluster", "--clusters", "8"], ["channel-prune", "--ratio", "0.5"],
                                       ["qat"]])
def test_every_technique_refuses_in_one_line(graphs, technique, cli, tmp_path):
    path, data = graphs["ops"]
    r = cli("compress", *technique, path, "--data", data, "-o", tmp_path / "t.keras")
    assert_one_line_error(r, "tf_keras bridge cannot rebuild", WHY["ops"])


def test_compress_auto_keeps_ptq_and_says_why_techniques_were_not_tried(graphs, cli, tmp_path):
    path, data = graphs["ops"]
    r = cli("compress", "auto", path, "--data", data, "--max-drop", "1", "--runtime", "litert", "-o", tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert (tmp_path / "best-litert.tflite").exists()
    result = json.loads((tmp_path / "auto.json").read_text())
    text = json.dumps(result)
    assert "not tried: prune(0.5) needs tf_keras layers (tfmot)" in text and WHY["ops"] in text, text[:2000]
    assert "tflite(int8)" in text


def test_a_keras3_layer_of_the_users_own_is_served_with_custom_objects(cli, run_cli, tmp_path):
    path, data, code = user_models.keras3_custom_layer(tmp_path)
    r = run_cli("export", "onnx", path, "--data", data, "-o", tmp_path / "c.onnx")  # a fresh process: not registered
    assert_one_line_error(r, "--custom-objects")
    r = cli("export", "onnx", path, "--data", data, "--custom-objects", code, "-o", tmp_path / "c.onnx")
    assert r.returncode == 0, r.stderr + r.stdout
    text = r.stdout.replace("\n", " ")
    assert SERVED in text and "'gated_dense' is a Keras 3 class of the user's own" in text


@pytest.mark.skipif(not HAS_KERAS_HUB, reason="keras-hub is not installed")
def test_keras_hub_classes_load_in_safe_mode_but_other_modules_do_not(graphs, tmp_path):
    import zipfile

    from models.errors import UserError
    from models.loading import load_model_file

    path, _ = graphs["bert"]
    loaded = load_model_file(path)  # safe mode, no --custom-objects
    assert loaded.keras == "keras3_native" and "BertBackbone" in loaded.why_native
    forged = tmp_path / "forged.keras"  # a keras_hub module path with a class keras_hub does not register there
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(forged, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == "config.json":
                body = body.replace(b'"keras_hub>BertBackbone"', b'"os>system"')
            dst.writestr(item, body)
    with pytest.raises(UserError, match="refused in safe mode"):
        load_model_file(forged)


def test_several_outputs_keep_the_models_order_in_both_formats(cli, tmp_path):
    """Named outputs whose sorted order is not the model's (tf2onnx and TFLite signatures list them sorted)."""
    import keras  # Keras 3

    from export import runtime

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="features")
    h = keras.layers.Dense(8, activation="relu")(inputs)
    zeta = keras.layers.Dense(3, activation="softmax", name="zeta")(h + 1.0)
    alpha = keras.layers.Dense(2, name="alpha")(h)
    model = keras.Model(inputs, [zeta, alpha])
    path = tmp_path / "two_out.keras"
    model.save(path)
    x = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")
    expected = [np.asarray(o) for o in model(x)]
    for fmt in ("onnx", "tflite"):
        out = tmp_path / f"two.{fmt}"
        r = cli("export", fmt, path, "-o", out)
        assert r.returncode == 0, r.stderr + r.stdout
        got = runtime.load(out).predict(x)
        assert [g.shape for g in got] == [(8, 3), (8, 2)], fmt
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=1e-5)
    import onnx

    assert [o.name for o in onnx.load(tmp_path / "two.onnx").graph.output] == ["zeta", "alpha"]


def test_the_fp32_onnx_file_is_the_size_of_keras3s_own_export(graphs, cli, tmp_path):
    """The same graph as ``model.export(format="onnx")`` plus the toolkit's metadata: the shapes ``check`` infers
    are not stored (they were 13% of a small transformer block's file)."""
    import onnx

    from models.engines.keras3 import keras3

    path, data = graphs["ops"]
    out = tmp_path / "m.onnx"
    r = cli("export", "onnx", path, "--data", data, "-o", out)
    assert r.returncode == 0, r.stderr + r.stdout
    model = keras3().saving.load_model(path)
    model(_inputs(data, 1))  # Keras' ONNX export refuses a model never called
    model.export(str(tmp_path / "keras.onnx"), format="onnx", verbose=False)
    ours, theirs = onnx.load(out), onnx.load(tmp_path / "keras.onnx")
    assert not ours.graph.value_info
    metadata = sum(len(p.key) + len(p.value) for p in ours.metadata_props)
    assert out.stat().st_size <= (tmp_path / "keras.onnx").stat().st_size + metadata + 512
    assert len(ours.graph.node) <= len(theirs.graph.node) + 1
