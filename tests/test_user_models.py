"""The user's own model takes the zoo's path: Keras 3 and tf_keras files, custom layers, --data, --metric."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import user_models


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    k3, k3_data = user_models.keras3_cnn(d)
    tab, tab_data = user_models.tabular(d)
    custom, custom_data, code = user_models.custom_layer(d)
    return dict(dir=d, k3=k3, k3_data=k3_data, tab=tab, tab_data=tab_data, custom=custom, custom_data=custom_data,
                code=code)


def _metric_line(text: str, name: str = "accuracy") -> tuple[float, float]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{name}: "))
    numbers = [float(w) for w in line.replace("->", " ").split() if w.replace(".", "", 1).isdigit()]
    return numbers[0], numbers[-1]


def test_keras3_file_is_detected_and_bridged_with_parity(files):
    from models.engines.keras3 import keras3, written_by
    from models.subject import resolve

    assert written_by(files["k3"]) == "keras3" and written_by(files["tab"]) == "tf_keras"
    subject = resolve(str(files["k3"]), data=str(files["k3_data"]))
    assert subject.keras == "keras3"
    assert any("written by Keras 3" in n for n in subject.describe())
    original = keras3().saving.load_model(files["k3"])
    x = subject.splits.test.x[:32]
    np.testing.assert_allclose(np.asarray(original(x)), subject.model.predict(x, verbose=0), atol=1e-5)
    assert "hold-out" in subject.data_from and subject.metric.name == "accuracy"
    assert "compile(metrics=['accuracy'])" in subject.metric_from


@pytest.mark.parametrize("fmt,mode", [("tflite", "fp32"), ("onnx", "fp32"), ("tflite", "int8"), ("onnx", "int8"),
                                      ("tflite", "dynamic"), ("tflite", "float16"), ("onnx", "float16")])
def test_keras3_file_exports_with_parity_and_metric(files, cli, tmp_path, fmt, mode):
    out = tmp_path / f"m.{fmt}"
    r = cli("export", fmt, files["k3"], "--data", files["k3_data"], "--quantize", mode, "-o", out)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "written by Keras 3" in r.stdout and out.exists()
    before, after = _metric_line(r.stdout)
    assert before > 0.9 and before - after <= 0.01, r.stdout


@pytest.mark.parametrize("technique", [["prune", "--sparsity", "0.5"], ["prune", "--structure", "2:4"],
                                       ["cluster", "--clusters", "8"], ["channel-prune", "--ratio", "0.5"]])
def test_keras3_file_through_techniques_comes_back_as_keras3(files, cli, tmp_path, technique):
    from models.engines.keras3 import keras3, written_by

    out = tmp_path / "result.keras"
    r = cli("compress", *technique, files["k3"], "--data", files["k3_data"], "--epochs", "1", "-o", out)
    assert r.returncode == 0, r.stderr + r.stdout
    assert written_by(out) == "keras3"
    model = keras3().saving.load_model(out)  # the user's own Keras opens it
    assert model.predict(np.zeros((1, 16, 16, 1), "float32"), verbose=0).shape == (1, 3)
    before, after = _metric_line(r.stdout)
    assert 0 <= after <= 1 and before > 0.9


def test_keras3_qat_tflite_and_refused_keras_output(files, cli, tmp_path):
    r = cli("compress", "qat", files["k3"], "--data", files["k3_data"], "--epochs", "1", "-o", tmp_path / "q.tflite")
    assert r.returncode == 0, r.stderr + r.stdout
    r = cli("compress", "qat", files["k3"], "--data", files["k3_data"], "-o", tmp_path / "q.keras")
    assert r.returncode == 2 and "fake-quant wrappers" in r.stderr and not (tmp_path / "q.keras").exists()


def test_tabular_int8_calibrates_on_data_and_keeps_accuracy(files, cli, tmp_path):
    for fmt in ("tflite", "onnx"):
        out = tmp_path / f"tab.{fmt}"
        r = cli("compress", "quantize", files["tab"], "--data", files["tab_data"], "--format", fmt, "--mode", "int8",
                "-o", out)
        assert r.returncode == 0, r.stderr + r.stdout
        before, after = _metric_line(r.stdout)
        assert before > 0.85 and before - after <= 0.01, (fmt, r.stdout)


def test_without_data_synthetic_inputs_follow_the_normalization_layer(files, cli, tmp_path):
    from models.subject import resolve

    subject = resolve(str(files["tab"]))
    x = subject.splits.train.x
    norm = next(layer for layer in subject.model.layers if type(layer).__name__ == "Normalization")
    std = np.sqrt(np.ravel(norm.variance))
    assert np.all(np.abs(x.mean(0) - np.ravel(norm.mean)) < 0.5 * std)
    assert np.all(np.abs(x.std(0) / std - 1) < 0.3)
    assert x[:, 0].mean() > 10_000  # raw incomes, not standard normals
    r = cli("compress", "quantize", files["tab"], "--format", "tflite", "--mode", "int8", "-o", tmp_path / "t.tflite")
    assert r.returncode == 0, r.stderr
    assert "synthetic inputs" in r.stdout and "accuracy unknown" in r.stdout and "--data fixes it" in r.stdout


def test_synthetic_inputs_follow_rescaling_and_embedding(tmp_path):
    from models.backend import keras
    from models.spec import signature_of
    from models.datasets.synthetic import synthetic_inputs

    pixels = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Rescaling(1 / 255.0), keras.layers.Flatten()])
    x = synthetic_inputs(pixels, signature_of(pixels), 200)
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 100
    tokens_in = keras.Input((5,), dtype="int32")
    tokens = keras.Model(tokens_in, keras.layers.Embedding(37, 4)(tokens_in))
    ids = synthetic_inputs(tokens, signature_of(tokens), 500)
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() == 36


def test_custom_layer_needs_custom_objects_then_exports_and_prunes(files, run_cli, cli, tmp_path):
    r = run_cli("export", "onnx", files["custom"], "--data", files["custom_data"], "-o", tmp_path / "c.onnx")
    assert r.returncode == 2 and "--custom-objects" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c.onnx").exists()
    for fmt in ("onnx", "tflite"):
        r = cli("export", fmt, files["custom"], "--data", files["custom_data"], "--custom-objects", files["code"],
                "-o", tmp_path / f"c.{fmt}")
        assert r.returncode == 0, r.stderr + r.stdout
        assert "ScaledDense" in r.stdout  # the custom objects used are named
    r = cli("compress", "prune", files["custom"], "--data", files["custom_data"], "--custom-objects", files["code"],
            "-o", tmp_path / "cp.keras")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "scaled_dense" in r.stdout  # skipped with its reason, or pruned: either way named


def test_data_formats(files, tmp_path):
    from models.subject import resolve

    x = np.load(files["tab_data"])["x"]
    y = np.load(files["tab_data"])["y"]
    np.savez(tmp_path / "named.npz", features=x, y=y)
    header = ",".join([f"f{i}" for i in range(6)] + ["target"])
    np.savetxt(tmp_path / "t.csv", np.column_stack([x, y]), delimiter=",", header=header, comments="")
    np.save(tmp_path / "inputs.npy", x)
    for data, extra in ((files["tab_data"], {}), (tmp_path / "named.npz", {}), (tmp_path / "t.csv", {"label": "target"})):
        s = resolve(str(files["tab"]), data=str(data), **extra)
        assert s.metric.name == "accuracy" and len(s.splits.test) == 400 and len(s.splits.train) == 1600
        assert s.score(s.model) > 0.85
    s = resolve(str(files["tab"]), data=str(tmp_path / "inputs.npy"))
    assert s.metric is None and "unknown" in s.metric_from
    s = resolve(str(files["tab"]), data=str(files["tab_data"]), eval_data=str(tmp_path / "named.npz"), metric="auc")
    assert len(s.splits.test) == 2000 and s.metric.name == "roc_auc" and "--metric" in s.metric_from


def test_image_folder(files, tmp_path):
    from PIL import Image

    from models.subject import resolve

    x, y = np.load(files["k3_data"])["x"][:60], np.load(files["k3_data"])["y"][:60]
    for i, (img, label) in enumerate(zip(x, y)):
        folder = tmp_path / "images" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0].astype("uint8")).save(folder / f"{i}.png")
    s = resolve(str(files["k3"]), data=str(tmp_path / "images"))
    assert len(s.splits.train) + len(s.splits.test) == 60 and s.spec.labels == ["class0", "class1", "class2"]
    assert s.score(s.model) > 0.9


def _bad(tmp_path, x, y=None, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, **({} if y is None else {"y": y}), **arrays)
    return path


@pytest.mark.parametrize("case,expected", [
    ("shape", "expects samples of shape (6,)"),
    ("dtype", "expects float32"),
    ("names", "do not match the model's inputs"),
    ("label_range", "outside the model's 2 output classes"),
    ("nan", "NaN/Inf"),
    ("empty_folder", "no images found"),
    ("csv_no_label", "no label column 'target'"),
    ("csv_without_flag", "needs --label"),
    ("few", "at least 2"),
])
def test_bad_data_is_one_line_and_writes_nothing(files, cli, tmp_path, case, expected):
    x = np.load(files["tab_data"])["x"]
    y = np.load(files["tab_data"])["y"]
    extra = []
    if case == "shape":
        data = _bad(tmp_path, x[:, :4], y)
    elif case == "dtype":
        data = _bad(tmp_path, np.array([["a"] * 6] * 10), y[:10])
    elif case == "names":
        data = tmp_path / "names.npz"
        np.savez(data, wrong=x, y=y)
    elif case == "label_range":
        data = _bad(tmp_path, x, y + 5)
    elif case == "nan":
        x = x.copy()
        x[3, 2] = np.nan
        data = _bad(tmp_path, x, y)
    elif case == "empty_folder":
        data = tmp_path / "empty"
        data.mkdir()
    elif case in ("csv_no_label", "csv_without_flag"):
        data = tmp_path / "d.csv"
        np.savetxt(data, np.column_stack([x, y])[:20], delimiter=",", header=",".join("abcdefg"), comments="")
        extra = ["--label", "target"] if case == "csv_no_label" else []
    else:
        data = _bad(tmp_path, x[:1], y[:1])
    out = tmp_path / "out.tflite"
    r = cli("compress", "quantize", files["tab"], "--data", data, *extra, "--format", "tflite", "--mode", "int8",
            "-o", out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists() and not list(tmp_path.glob("*.tflite*"))


def test_metric_needs_labels_and_unknown_metric(files, cli, tmp_path):
    r = cli("export", "onnx", files["tab"], "--metric", "accuracy", "-o", tmp_path / "a.onnx")
    assert r.returncode == 2 and "needs labelled data" in r.stderr
    r = cli("export", "onnx", files["tab"], "--data", files["tab_data"], "--metric", "bleu", "-o", tmp_path / "a.onnx")
    assert r.returncode == 2 and "unknown metric 'bleu'" in r.stderr and "rmse" in r.stderr


def test_quantized_export_that_loses_accuracy_is_not_handed_over(files, cli, tmp_path):
    out = tmp_path / "strict.tflite"
    r = cli("export", "tflite", files["tab"], "--data", files["tab_data"], "--quantize", "int8", "--max-drop", "-1",
            "-o", out)
    assert r.returncode == 1 and "dropped" in r.stderr and not out.exists()


def test_metric_inference_from_compile_config():
    from models import metrics

    assert metrics.infer({"metrics": ["AUC"]}, 1, "sigmoid")[0].name == "roc_auc"
    assert metrics.infer({"loss": "mean_squared_error"}, 1, None)[0].name == "mse"
    assert metrics.infer({}, 10, "softmax")[0].name == "accuracy"
    assert metrics.infer({}, 1, "linear")[0].name == "mse"
    cfg = {"metrics": [{"module": "keras.metrics", "class_name": "MeanAbsoluteError", "config": {"name": "mae"}}]}
    assert metrics.infer(cfg, 1, None)[0].name == "mae"


def test_compile_config_is_read_from_both_keras_files(files):
    from models.loading import compile_config

    with zipfile.ZipFile(files["k3"]) as zf:
        assert "compile_config" in json.loads(zf.read("config.json"))
    assert compile_config(files["k3"])["loss"] == "sparse_categorical_crossentropy"
    assert compile_config(files["tab"])["metrics"]


def test_benchmarks_run_on_user_files_beside_a_zoo_model(files, cli, tmp_path, monkeypatch):
    """A custom-layer tf_keras file and a Keras 3 file get the zoo's variants, scored with their own metric."""
    from benchmarks.store import Store

    monkeypatch.delenv("CT_CUSTOM_OBJECTS", raising=False)
    r = cli("benchmarks", "run", "--models", files["custom"], "mlp", "--tiny", "--data", files["custom_data"],
            "--custom-objects", files["code"], "--variants", "fp32", "tflite-int8", "onnx-fp32", "pruned",
            "--runtimes", "keras", "litert", "onnxruntime-cpu", "--batch", "1", "--threads", "1", "--quick",
            "--out", tmp_path / "res")
    assert r.returncode == 0, r.stderr + r.stdout
    rows = Store(tmp_path / "res" / "results.db").rows()
    mine = [row for row in rows if row["model"] == f"custom.keras ({files['dir'].name})"]
    assert {(row["variant"], row["runtime"]) for row in mine} == {
        ("fp32", "keras"), ("pruned", "keras"), ("tflite-int8", "litert"), ("onnx-fp32", "onnxruntime-cpu")}
    assert all(row["status"] == "ok" for row in mine), [(row["variant"], row["reason"]) for row in mine]
    fp32 = next(row for row in mine if row["variant"] == "fp32")
    assert fp32["metric_name"] == "accuracy" and fp32["metric"] > 0.8
    scores = {row["variant"]: row["metric"] for row in mine}
    assert abs(scores["onnx-fp32"] - scores["fp32"]) < 1e-9 and abs(scores["tflite-int8"] - scores["fp32"]) <= 0.02
    assert 0.5 < scores["pruned"] <= 1.0  # fine-tuned on --data; its drop is the recipe's (see compress.techniques.finetune)
    assert fp32["model_key"].startswith("custom-") and len(fp32["model_key"]) > len("custom-") + 8
    assert {row["model"] for row in rows} == {f"custom.keras ({files['dir'].name})", "mlp"}


def test_benchmarks_run_on_a_file_without_data_measures_latency_only(files, cli, tmp_path):
    from benchmarks.store import Store

    r = cli("benchmarks", "run", "--models", files["k3"], "--variants", "tflite-fp32", "--runtimes", "litert",
            "--batch", "1", "--threads", "1", "--quick", "--out", tmp_path / "res")
    assert r.returncode == 0, r.stderr + r.stdout
    (row,) = Store(tmp_path / "res" / "results.db").rows()
    assert row["status"] == "ok" and row["metric"] is None and row["p50_ms"] > 0


def test_keras3_model_export_savedmodel_exports_and_techniques_say_why_not(files, cli, tmp_path):
    from models.engines.keras3 import keras3

    saved = tmp_path / "exported"
    keras3().saving.load_model(files["k3"]).export(str(saved), verbose=False)
    r = cli("export", "onnx", saved, "--data", files["k3_data"], "--quantize", "int8", "-o", tmp_path / "s.onnx")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "serving signature" in r.stdout and (tmp_path / "s.onnx").exists()
    before, after = _metric_line(r.stdout)
    assert before > 0.9 and before - after <= 0.01
    r = cli("compress", "prune", saved, "--data", files["k3_data"], "-o", tmp_path / "p.keras")
    assert r.returncode == 2 and "no layers with weights" in r.stderr and not (tmp_path / "p.keras").exists()


def test_relative_paths_are_the_users_folder_not_the_builders(files, cli, tmp_path):
    """Builders run in the project folder: a relative --cache-dir (and model path) must still mean the user's."""
    import shutil

    from benchmarks.build import ROOT

    shutil.copy(files["k3"], tmp_path / "mine.keras")
    r = cli("benchmarks", "run", "--models", "mine.keras", "--variants", "tflite-fp32", "--runtimes", "litert",
            "--batch", "1", "--threads", "1", "--quick", "--out", "res", "--cache-dir", "cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert list((tmp_path / "cache" / "variants").glob("mine-*/tflite-fp32.tflite"))
    assert not (ROOT / "cache").exists() and (tmp_path / "res" / "results.db").exists()
