"""A sweep's results are keyed by what produced them: the model's bytes (every file of a SavedModel), the data,
the metric and the code; two files with the same name stay two models in the store and the report."""
from __future__ import annotations

import json

import numpy as np
import pytest

FEATURES = 4


def _data(path, n: int = 48, seed: int = 0, flip: bool = False):
    """Labels are the sign of the first feature (flipped: the opposite), so a hand-set model scores 1.0 or 0.0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = ((x[:, 0] > 0) != flip).astype("int64")
    np.savez(path, x=x, y=y)
    return path


def _model(sign: float = 1.0):
    """A tiny tf_keras classifier, fitted for one epoch on a handful of samples, then given weights whose accuracy
    on _data is known: sign 1 predicts the label (1.0), sign -1 its opposite (0.0)."""
    from models.backend import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((FEATURES,))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(3, activation="relu")(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(1).normal(size=(8, FEATURES)).astype("float32")
    model.fit(x, (x[:, 0] > 0).astype("int64"), epochs=1, verbose=0)
    hidden = np.zeros((FEATURES, 3), "float32")
    hidden[0] = [1.0, -1.0, 0.0]  # relu(x0), relu(-x0)
    out = np.array([[-sign, sign], [sign, -sign], [0.0, 0.0]], "float32") * 10
    model.set_weights([hidden, np.zeros(3, "float32"), out, np.zeros(2, "float32")])
    return model


def _savedmodel(path, sign: float):
    from models.backend import tf

    tf.saved_model.save(_model(sign), str(path))
    return path


def _sweep(cli, model, out, cache, *extra):
    r = cli("benchmarks", "run", "--models", model, "--variants", "fp32", "--runtimes", "keras", "--batch", "1",
            "--threads", "1", "--quick", "--out", out, "--cache-dir", cache, *extra)
    assert r.returncode == 0, r.stderr + r.stdout
    return r


def _rows(out):
    from benchmarks.store import Store

    return Store(out / "results.db").rows()


def _new(r) -> int:
    line = next(ln for ln in r.stdout.splitlines() if "new measurement(s)" in ln)
    return int(line.split()[0])


def test_savedmodel_directory_in_benchmarks_run_gives_rows(cli, tmp_path):
    """The fp32 row of a SavedModel directory: sized and hashed as all its files, not read as one (exit 0)."""
    saved = _savedmodel(tmp_path / "exported", 1.0)
    data = _data(tmp_path / "d.npz")
    r = _sweep(cli, saved, tmp_path / "res", tmp_path / "cache", "--data", data, "--metric", "accuracy")
    (row,) = _rows(tmp_path / "res")
    assert row["status"] == "ok" and row["p50_ms"] > 0, row["reason"]
    files = [p for p in saved.rglob("*") if p.is_file()]
    assert row["size"] == sum(p.stat().st_size for p in files)
    assert row["metric"] == 1.0
    assert _new(r) == 1


def test_resaved_savedmodel_with_other_weights_is_measured_again(cli, tmp_path):
    """Same directory, same file names, other weights: new rows with the new model's metric; the old rows stay
    apart (another model key), and the run's report shows the new one only."""
    saved, data = tmp_path / "sm", _data(tmp_path / "d.npz")
    args = (cli, _savedmodel(saved, 1.0), tmp_path / "res", tmp_path / "cache", "--data", data, "--metric",
            "accuracy")
    _sweep(*args)
    names_before = sorted(str(p.relative_to(saved)) for p in saved.rglob("*"))
    _savedmodel(saved, -1.0)
    assert sorted(str(p.relative_to(saved)) for p in saved.rglob("*")) == names_before
    r = _sweep(*args)
    assert _new(r) == 1, r.stdout
    rows = _rows(tmp_path / "res")
    assert sorted(row["metric"] for row in rows) == [0.0, 1.0]
    assert len({row["model_key"] for row in rows}) == 2
    (reported,) = json.loads((tmp_path / "res" / "results.json").read_text())
    assert reported["metric"] == 0.0
    r = cli("benchmarks", "report", "--out", tmp_path / "res")  # the whole store: both versions, named apart
    assert r.returncode == 0, r.stderr + r.stdout
    report = (tmp_path / "res" / "report.md").read_text()
    sections = [ln for ln in report.splitlines() if ln.startswith(f"### sm ({tmp_path.name}) [")]
    assert len(sections) == 2, report


def test_changed_data_or_metric_is_scored_again(cli, tmp_path):
    """The same model on other --data (rewritten under the same name) is scored again, and so is another --metric."""
    model = tmp_path / "m.keras"
    _model(1.0).save(model)
    data = _data(tmp_path / "d.npz")
    args = (cli, model, tmp_path / "res", tmp_path / "cache", "--data", data)
    _sweep(*args, "--metric", "accuracy")
    _data(data, flip=True)  # the same file name, other labels
    r = _sweep(*args, "--metric", "accuracy")
    assert _new(r) == 1, r.stdout
    assert sorted(row["metric"] for row in _rows(tmp_path / "res")) == [0.0, 1.0]
    r = _sweep(*args, "--metric", "top5_accuracy")
    assert _new(r) == 1, r.stdout
    assert {row["metric_name"] for row in _rows(tmp_path / "res")} == {"accuracy", "top5_accuracy"}
    r = _sweep(*args, "--metric", "top5_accuracy")  # nothing changed: nothing measured again
    assert _new(r) == 0, r.stdout


def test_image_folder_content_is_part_of_the_key(tmp_path):
    """An image folder's files (and their class folders) are the data's content."""
    from models.artifacts import sha256_file

    folder = tmp_path / "images"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        (folder / cls / "1.png").write_bytes(b"pixels-" + cls.encode())
    before = sha256_file(folder)
    (folder / "b" / "1.png").write_bytes(b"other pixels")
    changed = sha256_file(folder)
    (folder / "b" / "1.png").write_bytes(b"pixels-b")
    assert sha256_file(folder) == before != changed
    (folder / "b" / "1.png").rename(folder / "a" / "2.png")  # the same bytes in the same order, another class
    assert sha256_file(folder) != before


def test_same_file_name_in_two_folders_stays_two_models(cli, tmp_path):
    """v1/m.keras and v2/m.keras in one sweep: two models in the store and in the report, each with its metric."""
    data = _data(tmp_path / "d.npz")
    paths = []
    for folder, sign in (("v1", 1.0), ("v2", -1.0)):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "m.keras")
        _model(sign).save(paths[-1])
    r = cli("benchmarks", "run", "--models", *paths, "--variants", "fp32", "--runtimes", "keras", "--batch", "1",
            "--threads", "1", "--quick", "--out", tmp_path / "res", "--cache-dir", tmp_path / "cache", "--data", data,
            "--metric", "accuracy")
    assert r.returncode == 0, r.stderr + r.stdout
    rows = _rows(tmp_path / "res")
    assert {row["model"]: row["metric"] for row in rows} == {"m.keras (v1)": 1.0, "m.keras (v2)": 0.0}
    assert len({row["model_key"] for row in rows}) == 2
    report = (tmp_path / "res" / "report.md").read_text()
    assert "### m.keras (v1)" in report and "### m.keras (v2)" in report
    assert {row["model"] for row in json.loads((tmp_path / "res" / "results.json").read_text())} == {
        "m.keras (v1)", "m.keras (v2)"}
    from benchmarks.store import Store

    store = Store(tmp_path / "res" / "results.db")
    assert {row["model"] for row in store.rows(["m.keras (v2)"])} == {"m.keras (v2)"}
    assert len(store.rows(["m.keras"])) == len(store.rows(["m"])) == 2  # every folder's m.keras


@pytest.mark.parametrize("change", ["code", "label", "seed"])
def test_unit_key_follows_custom_objects_label_and_seed(tmp_path, change):
    """The content key also covers the --custom-objects file's content, the --label column and the hold-out seed."""
    from models.subject import Source, content_key

    model = tmp_path / "m.keras"
    _model(1.0).save(model)
    code = tmp_path / "layers.py"
    code.write_text("X = 1\n")
    csv = tmp_path / "d.csv"
    x = np.random.default_rng(0).normal(size=(20, FEATURES))
    csv.write_text("a,b,c,d,y,z\n" + "".join(f"{r[0]},{r[1]},{r[2]},{r[3]},{int(r[0] > 0)},{int(r[0] > 0)}\n"
                                               for r in x))
    base = Source(str(model), data=str(csv), label="y", custom_objects=str(code))
    before = content_key(base)
    assert content_key(base) == before
    if change == "code":
        code.write_text("X = 2\n")
        after = content_key(base)
    elif change == "label":
        after = content_key(Source(str(model), data=str(csv), label="z", custom_objects=str(code)))
    else:
        after = content_key(Source(str(model), data=str(csv), label="y", custom_objects=str(code), seed=1))
    assert after != before
