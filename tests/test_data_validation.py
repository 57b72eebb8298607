"""--data that does not fit, or is hostile, is refused in one line that names the file and says what to do (exit 2):
labels whose shape does not fit the model's output, .npy/.npz headers that declare more than the file holds or
memory allows, files in an image folder that are not images, and symlinks out of an image folder."""
from __future__ import annotations

import os
import socket
import zipfile

import numpy as np
import pytest
from hostile import assert_one_line_error

from models.datasets import user_data

N = 40


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """Untrained tiny models (the checks run before any scoring): a 3-class MLP, a regression, a per-step
    3-class sequence model, and a 2-class 8x8 RGB image model."""
    from models.backend import keras

    d = tmp_path_factory.mktemp("data_validation")
    layers = keras.layers
    built = {
        "mlp3": keras.Sequential([keras.Input((4,), name="features"), layers.Dense(3, activation="softmax")]),
        "reg": keras.Sequential([keras.Input((4,), name="features"), layers.Dense(1)]),
        "seq": keras.Sequential([keras.Input((5, 4), name="steps"), layers.Dense(3, activation="softmax")]),
        "img": keras.Sequential([keras.Input((8, 8, 3), name="pixels"), layers.Flatten(),
                                 layers.Dense(2, activation="softmax")]),
    }
    for name, model in built.items():
        model.compile(optimizer="adam", loss="mse" if name == "reg" else "sparse_categorical_crossentropy")
        model.save(d / f"{name}.keras")
    return d


def _run(cli, models_dir, tmp_path, model, data):
    out = tmp_path / "out.tflite"
    res = cli("compress", "quantize", models_dir / f"{model}.keras", "--data", data, "--format", "tflite",
              "--mode", "int8", "-o", out)
    assert not out.exists()
    return res


def _x(shape=(N, 4)):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


# ------------------------------------------------------------------------------- 1. labels that do not fit


@pytest.mark.parametrize("model,y,fragments", [
    ("mlp3", np.zeros((N, 7)), ["labels y have shape (40, 7)", "output is (?, 3)", "give y as (40,) class ids in 0..2",
                                "(40, 3) one-hot"]),
    ("mlp3", np.zeros((N, 3, 2)), ["labels y have shape (40, 3, 2)", "give y as (40,) class ids"]),
    ("mlp3", np.zeros((N, 2)), ["labels y have shape (40, 2)", "(40, 3) one-hot"]),
    ("mlp3", np.array(["cat"] * N), ["labels must be numbers", "<U3", "class ids"]),
    ("mlp3", np.array(1), ["labels y is a single value", "one label per sample"]),
    ("reg", np.zeros((N, 2)), ["labels y have shape (40, 2)", "output is (?, 1)", "give y as (40, 1) or (40,)"]),
    ("seq", np.zeros(N, int), ["labels y have shape (40,)", "output is (?, 5, 3)", "give y as (40, 5) class ids"]),
], ids=["width-7-for-3-classes", "rank-3", "width-2-for-3-classes", "strings", "scalar", "regression-width-2",
        "sequence-ids-missing-steps"])
def test_labels_that_do_not_fit_the_output(cli, models_dir, tmp_path, model, y, fragments):
    data = tmp_path / "bad_labels.npz"
    np.savez(data, **{"features" if model != "seq" else "steps": _x((N, 5, 4) if model == "seq" else (N, 4))}, y=y)
    res = _run(cli, models_dir, tmp_path, model, data)
    assert_one_line_error(res, f"--data {data}", *fragments)


def test_labels_in_every_form_that_fits_are_accepted(models_dir, tmp_path):
    from models.subject import resolve

    ids = np.arange(N) % 3
    forms = {"mlp3": [ids, ids[:, None], np.eye(3)[ids]], "reg": [_x((N,))[:], _x((N, 1))],
             "seq": [np.tile(ids[:, None], (1, 5)), np.eye(3)[np.tile(ids[:, None], (1, 5))]]}
    for model, ys in forms.items():
        for i, y in enumerate(ys):
            data = tmp_path / f"{model}{i}.npz"
            np.savez(data, x=_x((N, 5, 4) if model == "seq" else (N, 4)), y=y)
            s = resolve(str(models_dir / f"{model}.keras"), data=str(data))
            assert len(s.splits.train) + len(s.splits.test) == N, (model, y.shape)


# ---------------------------------------------------------------- 2. headers that declare more than there is


def _npy_bytes(shape, descr="<f4", payload=b"\0" * 64) -> bytes:
    import io

    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return f.getvalue() + payload


def test_npy_header_declaring_terabytes_is_refused_before_allocating(cli, models_dir, tmp_path):
    data = tmp_path / "huge.npy"
    data.write_bytes(_npy_bytes((400_000_000, 1000)))
    res = _run(cli, models_dir, tmp_path, "mlp3", data)
    assert_one_line_error(res, f"data {data}", "shape (400000000, 1000)", "1.46 TiB", "holds only 64 bytes",
                          "truncated or corrupt", "save it again")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_member_header_declaring_terabytes_is_refused_before_allocating(cli, models_dir, tmp_path, compression):
    data = tmp_path / "huge.npz"
    with zipfile.ZipFile(data, "w", compression) as z:
        z.writestr("x.npy", _npy_bytes((400_000_000_000, 4)))
        z.writestr("y.npy", _npy_bytes((N,), "<i8", b"\0" * 8 * N))
    res = _run(cli, models_dir, tmp_path, "mlp3", data)
    assert_one_line_error(res, f"data {data} (array 'x')", "shape (400000000000, 4)", "truncated or corrupt")


def test_arrays_larger_than_the_memory_limit_are_refused(cli, models_dir, tmp_path, monkeypatch):
    """A compressed .npz may rightly hold far more than its size: the limit on decoded bytes catches it."""
    monkeypatch.setattr(user_data, "MAX_BYTES", 4096, raising=False)
    data = tmp_path / "zeros.npz"
    np.savez_compressed(data, x=np.zeros((1000, 4), "float32"), y=np.zeros(1000, "int64"))
    assert data.stat().st_size < 4096
    res = _run(cli, models_dir, tmp_path, "mlp3", data)
    assert_one_line_error(res, f"data {data} (array 'x')", "15.62 KiB", "more than the 4.00 KiB allowed",
                          "pass a smaller sample")


def test_npy_renamed_npz_is_named_for_what_it_is(cli, models_dir, tmp_path):
    data = tmp_path / "really_npy.npz"
    with open(data, "wb") as f:
        np.save(f, _x())
    res = _run(cli, models_dir, tmp_path, "mlp3", data)
    assert_one_line_error(res, f"data {data}", "is an .npy file", "rename it to .npy")


# ------------------------------------------------------------------------------------ image folders


def _png(path, seed=0):
    from PIL import Image

    rgb = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def _folder(tmp_path):
    data = tmp_path / "data"
    for c in range(2):
        for i in range(3):
            _png(data / f"class{c}" / f"{i}.png", seed=10 * c + i)
    return data


def _tiff_as_jpg(path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="TIFF")


@pytest.mark.parametrize("case,make,fragments", [
    ("text-as-png", lambda d: (d / "class1" / "notes.png").write_text("not an image\n"),
     ["class1/notes.png is not a readable image", "remove it or replace it"]),
    ("empty-jpg", lambda d: (d / "class0" / "empty.jpg").write_bytes(b""),
     ["class0/empty.jpg is not a readable image"]),
    ("truncated-png", lambda d: (d / "class0" / "cut.png").write_bytes((d / "class0" / "0.png").read_bytes()[:60]),
     ["class0/cut.png is not a readable image"]),
    ("tiff-as-jpg", lambda d: _tiff_as_jpg(d / "class1" / "scan.jpg"),
     ["class1/scan.jpg is a TIFF image", "convert it to PNG or JPEG"]),
])
def test_files_that_are_not_images_are_named(cli, models_dir, tmp_path, case, make, fragments):
    data = _folder(tmp_path)
    make(data)
    res = _run(cli, models_dir, tmp_path, "img", data)
    assert_one_line_error(res, f"data {data}", *fragments)


def _outside(tmp_path):
    return _png(tmp_path / "elsewhere" / "stray.png", seed=99).parent


@pytest.mark.parametrize("case,make,named", [
    ("class-folder", lambda d, out: (d / "class2").symlink_to(out, target_is_directory=True), "class2"),
    ("file", lambda d, out: (d / "class0" / "link.png").symlink_to(out / "stray.png"), "class0/link.png"),
    ("sub-folder", lambda d, out: (d / "class1" / "more").symlink_to(out, target_is_directory=True),
     "class1/more"),
    ("non-image-file", lambda d, out: (d / "class1" / "README").symlink_to(out / "stray.png"), "class1/README"),
])
def test_symlinks_out_of_the_image_folder_are_refused(cli, models_dir, tmp_path, case, make, named):
    data = _folder(tmp_path)
    make(data, _outside(tmp_path))
    res = _run(cli, models_dir, tmp_path, "img", data)
    assert_one_line_error(res, f"data {data}: {data / named} is a symlink to {tmp_path / 'elsewhere'}",
                          "outside the data folder", "copy what it points at into the folder")


def test_only_regular_files_count_as_images(cli, models_dir, tmp_path, monkeypatch):
    data = _folder(tmp_path)
    monkeypatch.chdir(data / "class0")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind("sock.png")
        res = _run(cli, models_dir, tmp_path, "img", data)
    assert_one_line_error(res, f"{data / 'class0' / 'sock.png'} is not a regular file", "remove it")


def test_links_inside_the_folder_and_stray_files_still_load(models_dir, tmp_path):
    """Links that stay inside the folder are followed (a link back up is not walked twice), files that are not
    images by name are skipped, and the folder may itself be given through a link."""
    from models.subject import resolve

    data = _folder(tmp_path)
    _png(data / "class1" / "store" / "a.png", seed=5)
    (data / "class0" / "more").symlink_to(data / "class1" / "store", target_is_directory=True)
    (data / "class1" / "loop").symlink_to(data / "class1", target_is_directory=True)
    (data / "class1" / "again.png").symlink_to(data / "class1" / "0.png")
    (data / "class1" / "README.txt").write_text("taken with a phone\n")
    link = tmp_path / "link"
    link.symlink_to(data, target_is_directory=True)
    s = resolve(str(models_dir / "img.keras"), data=str(link))
    assert len(s.splits.train) + len(s.splits.test) == 4 + 5  # class0 + more/a.png, class1 + store/a.png + again.png
    assert s.spec.labels == ["class0", "class1"]
    x = np.concatenate([s.splits.train.x, s.splits.test.x])
    assert x.shape[1:] == (8, 8, 3) and x.dtype == np.float32


def test_image_folder_loads_as_keras_does(models_dir, tmp_path):
    """The same pixels and labels, in the same order, as Keras' image_dataset_from_directory gives."""
    from models.backend import keras
    from models.spec import TensorSig

    data = _folder(tmp_path)
    _png(data / "class1" / "deeper" / "z.png", seed=7)
    split = user_data.read(data, (TensorSig("pixels", (8, 8, 3), "float32"),))
    dataset = keras.utils.image_dataset_from_directory(data, labels="inferred", label_mode="int", color_mode="rgb",
                                                       image_size=(8, 8), batch_size=64, shuffle=False)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    np.testing.assert_array_equal(split.x, np.concatenate(xs))
    np.testing.assert_array_equal(split.y, np.concatenate(ys))


def test_symlink_check_never_walks_the_target(tmp_path):
    """A class folder linked at a huge tree is refused at once, before anything under it is listed."""
    data = _folder(tmp_path)
    (data / "usr").symlink_to("/usr", target_is_directory=True)
    calls = []
    real_walk = os.walk

    def walk(top, *a, **k):
        calls.append(top)
        return real_walk(top, *a, **k)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "walk", walk)
        with pytest.raises(user_data.UserError, match="usr is a symlink to /usr"):
            user_data._image_files(data)
    assert calls == []
