"""Hostile inputs for the reliability tests: mutators, simulated disk failures, and a directory of bad files."""
from __future__ import annotations

import errno
import io
import json
import os
import random
import shutil
import sqlite3
import zipfile
from pathlib import Path

import numpy as np


def assert_one_line_error(res, *fragments, code=2):
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr)
    err = res.stderr.strip()
    assert err, "no error message"
    assert "Traceback" not in res.stderr and "\n" not in err, err
    assert err.startswith(("error:", "python -m")), err
    for f in fragments:
        assert f in err, (f, err)


def flip_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random byte-level mutation: flips, truncation, insertion, zeroed or duplicated run."""
    data = bytearray(data)
    kind = rng.choice(["flip", "flip", "truncate", "insert", "zero", "duplicate"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= rng.randrange(1, 256)
    elif kind == "truncate":
        data = data[:rng.randrange(1, len(data))]
    elif kind == "insert":
        i = rng.randrange(len(data))
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "zero":
        i, n = rng.randrange(len(data)), rng.randint(1, 64)
        data[i:i + n] = bytes(len(data[i:i + n]))
    else:
        i, n = rng.randrange(len(data)), rng.randint(1, 64)
        data[i:i] = data[i:i + n]
    return bytes(data), kind


JSON_LEAVES = [-1, 0, 1, 2, 3, 7, 4096, 0.5, -2.5, "", "relu", "Dense", "nope", None, True, [], {}, [1, 2], {"a": 1},
           "float64", "int8"]


def mutate_json(obj, rng: random.Random):
    """Replace or delete 1-3 random nodes of a JSON document (values bounded: no 100 GB layers)."""
    nodes = []

    def walk(o, parent, key):
        nodes.append((parent, key))
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in items:
            walk(v, o, k)

    walk(obj, None, None)
    if len(nodes) < 2:
        return rng.choice(JSON_LEAVES)
    for _ in range(rng.randint(1, 3)):
        parent, key = rng.choice(nodes[1:])
        try:
            if rng.random() < 0.2 and isinstance(parent, dict):
                del parent[key]
            else:
                parent[key] = rng.choice(JSON_LEAVES)
        except (KeyError, IndexError):
            pass
    return obj


def zip_members(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rezip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
    return buf.getvalue()


def fail_writes_under(monkeypatch, directory: Path, code=errno.ENOSPC) -> None:
    """Simulate a full disk (or another refused write) for every file under ``directory``.

    Low-level writes (os.write, used by models.artifacts) and Keras' model.save both fail there, after
    writing part of the file, as a real full disk does.
    """
    from models.backend import keras

    directory = str(directory.resolve())
    real_write, real_save = os.write, keras.Model.save

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(directory):
            real_write(fd, bytes(data[:1]))
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    def save(self, filepath, *args, **kwargs):
        if str(Path(filepath).resolve()).startswith(directory):
            Path(filepath).write_bytes(b"PK\x03\x04 half a model")
            raise OSError(code, os.strerror(code), str(filepath))
        return real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(keras.Model, "save", save)


def make_read_only(monkeypatch, directory: Path) -> None:
    """A directory this user cannot write (root ignores permission bits, so access() says no too)."""
    directory.mkdir(exist_ok=True)
    directory.chmod(0o555)
    real_access = os.access
    target = str(directory.resolve())

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and str(Path(path).resolve()) == target:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def build_assets(d: Path) -> Path:
    """Valid files of every format (from the tiny mlp), and broken, hostile and mislabelled ones, in ``d``."""
    from conftest import tiny_trained

    from export.quantize.ptq import QuantRecipe
    from export import exporter
    from models.backend import keras
    from models.subject import resolve

    shutil.copy(tiny_trained("mlp").path, d / "mlp.keras")
    subject = resolve("mlp", tiny=True)
    subject.model.save(d / "mlp.h5")
    subject.model.save_weights(d / "weights.h5")
    exporter.export(subject, QuantRecipe("onnx"), d / "mlp.onnx")
    exporter.export(subject, QuantRecipe("tflite"), d / "mlp.tflite")

    def put(name, data):
        (d / name).write_bytes(data)

    keras_bytes, h5_bytes = (d / "mlp.keras").read_bytes(), (d / "mlp.h5").read_bytes()
    onnx_bytes, tflite_bytes = (d / "mlp.onnx").read_bytes(), (d / "mlp.tflite").read_bytes()
    for suffix in (".keras", ".h5", ".onnx", ".tflite", ".db", ".npy"):
        put("empty" + suffix, b"")
    put("truncated.keras", keras_bytes[:len(keras_bytes) // 2])
    put("corrupt.keras", keras_bytes[:200] + bytes(b ^ 0x5A for b in keras_bytes[200:600]) + keras_bytes[600:])
    put("garbage.keras", b"definitely not a model\n" * 10)
    put("truncated.h5", h5_bytes[:len(h5_bytes) // 2])
    put("corrupt.h5", h5_bytes[:512] + os.urandom(2048) + h5_bytes[2560:])
    put("truncated.onnx", onnx_bytes[:len(onnx_bytes) // 2])
    put("corrupt.onnx", onnx_bytes[:40] + b"\xff" * 64 + onnx_bytes[104:])
    put("truncated.tflite", tflite_bytes[:len(tflite_bytes) // 2])
    put("corrupt.tflite", tflite_bytes[:8] + b"\xff" * 64 + tflite_bytes[72:])
    put("tflite.keras", tflite_bytes)
    put("zip.h5", keras_bytes)
    put("zip.onnx", keras_bytes)
    put("zip.tflite", keras_bytes)
    put("tflite.onnx", tflite_bytes)
    put("onnx.tflite", onnx_bytes)
    put("notes.txt", b"hello\n")
    put("garbage.db", b"not a database" * 100)
    (d / "adir").mkdir()
    (d / "dir.onnx").mkdir()

    # serialized code: a Lambda layer in every Keras format, and a .keras that names os.system
    inp = keras.Input((4,), name="features")
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    lam.save(d / "lambda.keras")
    lam.save(d / "lambda.h5")
    lam.save(d / "lambda_savedmodel", save_format="tf")
    files = zip_members(keras_bytes)
    config = json.loads(files["config.json"])
    text = json.dumps(config).replace('"activation": "relu"', '"activation": {"module": "os", "class_name": '
                                      '"function", "config": "system", "registered_name": null}', 1)
    assert text != json.dumps(config)
    files["config.json"] = text.encode()
    put("evil.keras", rezip(files))

    # inputs for `export run`
    np.save(d / "x.npy", np.zeros((2, 4), np.float32))
    np.save(d / "x5.npy", np.zeros((2, 5), np.float32))
    np.save(d / "x1.npy", np.zeros((4,), np.float32))
    np.save(d / "x0.npy", np.zeros((0, 4), np.float32))
    np.save(d / "xs.npy", np.array([["a"] * 4] * 2))
    np.save(d / "xobj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    nan = np.ones((3, 4), np.float32)
    nan[0, 3], nan[2, 1] = np.inf, np.nan
    np.save(d / "xnan.npy", nan)

    # results stores: a valid one, a foreign SQLite database, a truncated one
    from benchmarks.store import Store

    store = d / "store"
    store.mkdir()
    Store(store / "results.db").put({"key": "k1", "model": "mlp", "variant": "fp32", "runtime": "keras", "batch": 1,
                                     "threads": 1, "status": "ok", "p50_ms": 1.0, "mean_ms": 1.0})
    with sqlite3.connect(d / "foreign.db") as db:
        db.execute("CREATE TABLE users (name TEXT)")
    (d / "garbage_store").mkdir()
    put("garbage_store/results.db", b"not a database" * 100)
    return d


def listing(directory: Path) -> set:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}
