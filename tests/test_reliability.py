"""Reliability and security: bad inputs, untrusted model files, interruptions.

* the bad-input matrix, walked for every command that takes the input: one line, the right exit code,
  no traceback, no partial output;
* untrusted files: serialized code is refused without --unsafe (and provably not run), native runtimes
  load files in a child process, so a crash or a hang is a reported error;
* seeded fuzzing of every loader with byte-level and structure-aware mutations of valid files;
* an interrupted (SIGINT) and a killed (SIGKILL) sweep: the store stays intact and the rerun completes
  with the same rows as an uninterrupted run, no duplicates, no stray files.
"""
from __future__ import annotations

import errno
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from export import probe as probe_mod
from export import runtime
from models.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ helpers


def assert_one_line_error(res, *fragments, code=2):
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr)
    err = res.stderr.strip()
    assert err, "no error message"
    assert "Traceback" not in res.stderr and "\n" not in err, err
    assert err.startswith(("error:", "python -m")), err
    for f in fragments:
        assert f in err, (f, err)


def _flip(data: bytes, rng: random.Random) -> tuple[bytes, str]:
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


_LEAVES = [-1, 0, 1, 2, 3, 7, 4096, 0.5, -2.5, "", "relu", "Dense", "nope", None, True, [], {}, [1, 2], {"a": 1},
           "float64", "int8"]


def _mutate_json(obj, rng: random.Random):
    """Replace or delete 1-3 random nodes of a JSON document (values bounded: no 100 GB layers)."""
    nodes = []

    def walk(o, parent, key):
        nodes.append((parent, key))
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in items:
            walk(v, o, k)

    walk(obj, None, None)
    if len(nodes) < 2:
        return rng.choice(_LEAVES)
    for _ in range(rng.randint(1, 3)):
        parent, key = rng.choice(nodes[1:])
        try:
            if rng.random() < 0.2 and isinstance(parent, dict):
                del parent[key]
            else:
                parent[key] = rng.choice(_LEAVES)
        except (KeyError, IndexError):
            pass
    return obj


def _zip_members(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rezip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
    return buf.getvalue()


def _fail_writes_under(monkeypatch, directory: Path, code=errno.ENOSPC) -> None:
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


def _make_read_only(monkeypatch, directory: Path) -> None:
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


# ------------------------------------------------------------------------------------------------- assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Valid files of every format (from the tiny mlp), and broken, hostile and mislabelled ones."""
    from conftest import tiny_trained

    from compress.ptq import QuantRecipe
    from export import exporter
    from models.backend import keras
    from models.loading import resolve

    d = tmp_path_factory.mktemp("assets")
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
    files = _zip_members(keras_bytes)
    config = json.loads(files["config.json"])
    text = json.dumps(config).replace('"activation": "relu"', '"activation": {"module": "os", "class_name": '
                                      '"function", "config": "system", "registered_name": null}', 1)
    assert text != json.dumps(config)
    files["config.json"] = text.encode()
    put("evil.keras", _rezip(files))

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


def _listing(directory: Path) -> set:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


# ---------------------------------------------------------------------------------------- the input matrix


@dataclass
class Case:
    id: str
    argv: list[str]  # {A}: the assets directory, {O}: this case's (empty) output directory
    fragments: list[str] = field(default_factory=list)
    code: int = 2
    patch: str | None = None  # "disk-full" | "read-only"
    warns: list[str] | None = None  # the command succeeds with these fragments in a warning line on stderr


KERAS_COMMANDS = {
    "export-onnx": (["export", "onnx", "{M}", "-o", "{O}/out.onnx"], "out.onnx"),
    "export-tflite": (["export", "tflite", "{M}", "-o", "{O}/out.tflite"], "out.tflite"),
    "prune": (["compress", "prune", "{M}", "--epochs", "0", "-o", "{O}/out.keras"], "out.keras"),
    "cluster": (["compress", "cluster", "{M}", "--epochs", "0", "-o", "{O}/out.keras"], "out.keras"),
    "qat": (["compress", "qat", "{M}", "--epochs", "0", "-o", "{O}/out.tflite"], "out.tflite"),
    "quantize": (["compress", "quantize", "{M}", "--format", "tflite", "--mode", "int8", "-o", "{O}/out.tflite"],
                 "out.tflite"),
    "channel-prune": (["compress", "channel-prune", "{M}", "--epochs", "0", "-o", "{O}/out.keras"], "out.keras"),
    "preflight": (["compress", "preflight", "{M}"], None),
}

# (case, model argument, fragments of the error)
KERAS_INPUTS = [
    ("missing", "{A}/missing.keras", ["no such file"]),
    ("empty-keras", "{A}/empty.keras", ["is empty"]),
    ("empty-h5", "{A}/empty.h5", ["is empty"]),
    ("truncated-keras", "{A}/truncated.keras", ["cannot load"]),
    ("corrupt-keras", "{A}/corrupt.keras", ["cannot load"]),
    ("garbage-keras", "{A}/garbage.keras", ["cannot load", "neither a .keras (zip) archive nor an HDF5 file"]),
    ("truncated-h5", "{A}/truncated.h5", ["cannot load"]),
    ("corrupt-h5", "{A}/corrupt.h5", ["cannot load"]),
    ("weights-only-h5", "{A}/weights.h5", ["cannot load", "no model config"]),
    ("directory", "{A}/adir", ["not a SavedModel"]),
    ("onnx-file", "{A}/mlp.onnx", ["exported ONNX model, not a Keras model", "export run"]),
    ("tflite-file", "{A}/mlp.tflite", ["exported TFLite model, not a Keras model"]),
    ("text-file", "{A}/notes.txt", ["not a Keras model file"]),
    ("tflite-named-keras", "{A}/tflite.keras", ["cannot load", "a TFLite model"]),
    ("zip-named-h5", "{A}/zip.h5", ["rename it to .keras"]),
    ("lambda-keras", "{A}/lambda.keras", ["Lambda layer", "--unsafe"]),
    ("lambda-h5", "{A}/lambda.h5", ["Lambda layer", "--unsafe"]),
    ("lambda-savedmodel", "{A}/lambda_savedmodel", ["Lambda layer", "--unsafe"]),
    ("foreign-code", "{A}/evil.keras", ["os.system", "--unsafe"]),
]

# where the output cannot be written (the command does its work first, then must leave nothing behind)
OUTPUT_PROBLEMS = {
    "disk-full": (["No space left on device"], "disk-full"),
    "read-only": (["not writable"], "read-only"),
    "no-dir": (["output directory does not exist"], None),
}
OUTPUT_CASES = {  # command -> output problems checked for it (each one costs a real conversion or pruning)
    "export-onnx": ["disk-full", "read-only", "no-dir"], "export-tflite": ["disk-full"],
    "prune": ["disk-full", "read-only", "no-dir"], "cluster": ["disk-full"], "qat": ["disk-full"],
    "quantize": ["disk-full"], "channel-prune": ["disk-full"],
}


def _cases() -> list[Case]:
    cases = []
    for command, (argv, out_name) in KERAS_COMMANDS.items():
        for case, model, fragments in KERAS_INPUTS:
            cases.append(Case(f"{command}:{case}", [a.replace("{M}", model) for a in argv], fragments))
        for problem in OUTPUT_CASES.get(command, []):
            fragments, patch = OUTPUT_PROBLEMS[problem]
            where = {"read-only": "{O}/ro", "no-dir": "{O}/no/such"}.get(problem, "{O}")
            cases.append(Case(f"{command}:output-{problem}",
                              [a.replace("{M}", "{A}/mlp.keras").replace("{O}", where) for a in argv], fragments,
                              patch=patch))

    run = ["export", "run"]
    for fmt in ("onnx", "tflite"):
        valid = f"{{A}}/mlp.{fmt}"
        for case, argv, fragments in [
            ("missing", [f"{{A}}/missing.{fmt}", "--input", "{A}/x.npy"], ["no such file"]),
            ("empty", [f"{{A}}/empty.{fmt}", "--input", "{A}/x.npy"], ["is empty"]),
            ("truncated", [f"{{A}}/truncated.{fmt}", "--input", "{A}/x.npy"], ["cannot load"]),
            ("corrupt", [f"{{A}}/corrupt.{fmt}", "--input", "{A}/x.npy"], ["cannot load"]),
            ("keras-archive", [f"{{A}}/zip.{fmt}", "--input", "{A}/x.npy"], ["is a zip archive"]),
            ("other-runtime-format", [f"{{A}}/{'tflite' if fmt == 'onnx' else 'onnx'}.{fmt}", "--input",
                                      "{A}/x.npy"], ["TFLite model, not an ONNX" if fmt == "onnx" else "cannot load"]),
            ("wrong-shape", [valid, "--input", "{A}/x5.npy"], ["input 'features'", "expected shape (?, 4)",
                                                               "got (2, 5)"]),
            ("wrong-rank", [valid, "--input", "{A}/x1.npy"], ["input 'features'", "2 dimensions", "got (4,)"]),
            ("wrong-dtype", [valid, "--input", "{A}/xs.npy"], ["input 'features'", "expected dtype float32",
                                                               "got str"]),
            ("empty-batch", [valid, "--input", "{A}/x0.npy"], ["input 'features'", "batch is empty"]),
            ("unknown-input-name", [valid, "--input", "pixels={A}/x.npy"], ["unknown input 'pixels'", "features"]),
            ("input-missing", [valid, "--input", "{A}/nope.npy"], ["cannot read input", "no such file"]),
            ("input-empty", [valid, "--input", "{A}/empty.npy"], ["cannot read input", "empty"]),
            ("input-not-npy", [valid, "--input", "{A}/notes.txt"], ["cannot read input", "not a .npy file"]),
            ("input-pickled-objects", [valid, "--input", "{A}/xobj.npy"], ["cannot read input", "Python objects"]),
            ("provider-unknown", [valid, "--input", "{A}/x.npy", "--provider", "QuantumExecutionProvider"],
             ["unknown provider 'QuantumExecutionProvider'", "CPUExecutionProvider"] if fmt == "onnx"
             else ["applies to .onnx files only"]),
            ("output-suffix", [valid, "--input", "{A}/x.npy", "-o", "{O}/out.txt"], ["must end in .npz"]),
            ("output-no-dir", [valid, "--input", "{A}/x.npy", "-o", "{O}/no/such/out.npz"],
             ["output directory does not exist"]),
        ]:
            cases.append(Case(f"export-run-{fmt}:{case}", run + argv, fragments))
        cases.append(Case(f"export-run-{fmt}:output-disk-full", run + [valid, "--input", "{A}/x.npy", "-o",
                                                                       "{O}/out.npz"],
                          ["No space left on device"], patch="disk-full"))
        cases.append(Case(f"export-run-{fmt}:output-read-only", run + [valid, "--input", "{A}/x.npy", "-o",
                                                                       "{O}/ro/out.npz"],
                          ["not writable"], patch="read-only"))
        cases.append(Case(f"export-run-{fmt}:nan-inf", run + [valid, "--input", "{A}/xnan.npy"], code=0,
                          warns=["input 'features'", "2 non-finite", "1 NaN, 1 Inf", "first at index (0, 3)"]))
    cases.append(Case("export-run:keras-file", run + ["{A}/mlp.keras", "--input", "{A}/x.npy"],
                      ["Keras model, not an exported one"]))
    cases.append(Case("export-run:directory", run + ["{A}/dir.onnx", "--input", "{A}/x.npy"], ["is a directory"]))

    for case, store, fragments in [
        ("missing", "{A}/missing.db", ["no results store"]),
        ("empty", "{A}/empty.db", ["is empty"]),
        ("garbage", "{A}/garbage.db", ["not a results store"]),
        ("keras-file", "{A}/mlp.keras", ["not a results store"]),
        ("foreign-sqlite", "{A}/foreign.db", ["without a results table"]),
    ]:
        cases.append(Case(f"benchmarks-compare:{case}", ["benchmarks", "compare", store, "{A}/store"], fragments))
        cases.append(Case(f"benchmarks-compare-new:{case}", ["benchmarks", "compare", "{A}/store", store],
                          fragments))
    cases += [
        Case("benchmarks-report:missing", ["benchmarks", "report", "--out", "{O}/nothing"], ["no results store"]),
        Case("benchmarks-report:garbage", ["benchmarks", "report", "--out", "{A}/garbage_store"],
             ["not a results store"]),
        Case("benchmarks-report:output-disk-full", ["benchmarks", "report", "--out", "{O}"],
             ["No space left on device"], patch="disk-full+store"),
        Case("benchmarks-report:output-read-only", ["benchmarks", "report", "--out", "{O}/ro"], ["not writable"],
             patch="read-only+store"),
        Case("benchmarks-run:out-is-a-file", ["benchmarks", "run", "--models", "mlp", "--tiny", "--out",
                                              "{A}/notes.txt"], ["cannot create a results store", "not a directory"]),
    ]

    # unknown names (the message lists the valid ones) and impossible options
    cases += [Case(f"names:{i}:{argv[0]}-{argv[1]}", argv, fragments) for i, (argv, fragments) in enumerate([
        (["export", "onnx", "resnet9000", "-o", "{O}/x.onnx"], ["unknown model 'resnet9000'", "valid:", "mlp"]),
        (["compress", "prune", "resnet9000", "-o", "{O}/x.keras"], ["unknown model 'resnet9000'", "valid:"]),
        (["models", "train", "resnet9000"], ["unknown model 'resnet9000'", "valid:"]),
        (["benchmarks", "run", "--models", "resnet9000"], ["unknown model 'resnet9000'", "valid:"]),
        (["compress", "sparsify", "mlp"], ["invalid choice: 'sparsify'", "prune", "quantize"]),
        (["compress", "quantize", "mlp", "--format", "tflite", "--mode", "int4"], ["mode 'int4'", "valid:"]),
        (["compress", "quantize", "mlp", "--format", "coreml", "--mode", "int8"], ["unknown format 'coreml'",
                                                                                    "valid:"]),
        (["export", "tflite", "mlp", "--quantize", "int3"], ["mode 'int3'", "valid:"]),
        (["compress", "prune", "mlp", "--schedule", "cosine"], ["unknown schedule 'cosine'", "valid:"]),
        (["compress", "cluster", "mlp", "--init", "psychic"], ["unknown centroid init 'psychic'", "valid:"]),
        (["benchmarks", "run", "--models", "mlp", "--runtimes", "tensorrt-x"], ["unknown runtime 'tensorrt-x'",
                                                                                "valid:", "litert"]),
        (["benchmarks", "run", "--models", "mlp", "--variants", "int2"], ["unknown variant 'int2'", "valid:"]),
        (["export", "run", "{A}/mlp.onnx", "--input", "{A}/x.npy", "--provider", "Nope"],
         ["unknown provider 'Nope'", "valid:"]),
        (["compress", "prune", "mlp", "--sparsity", "1.0"], ["--sparsity must be in [0, 1)"]),
        (["compress", "prune", "mlp", "--sparsity", "-0.1"], ["--sparsity must be in [0, 1)"]),
        (["compress", "cluster", "mlp", "--clusters", "0"], ["--clusters must be >= 2"]),
        (["compress", "channel-prune", "mlp", "--ratio", "1.5"], ["--ratio must be in (0, 1)"]),
        (["compress", "prune", "mlp", "--epochs", "-1"], ["--epochs must be >= 0"]),
        (["export", "onnx", "mlp", "--batch", "-1"], ["--batch must be a positive integer"]),
        (["export", "tflite", "mlp", "--batch", "0"], ["--batch must be a positive integer"]),
        (["benchmarks", "run", "--models", "mlp", "--batch", "-1"], ["positive integer"]),
        (["benchmarks", "run", "--models", "mlp", "--threads", "0"], ["positive integer"]),
    ])]
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_matrix(case, assets, cli, tmp_path, monkeypatch):
    """Every bad input x every command that takes it: one line naming the problem, exit 2, nothing written."""
    before = _listing(assets)
    argv = [a.replace("{A}", str(assets)).replace("{O}", str(tmp_path)) for a in case.argv]
    if case.patch and case.patch.endswith("+store"):
        shutil.copytree(assets / "store", tmp_path, dirs_exist_ok=True)
        if case.patch.startswith("read-only"):
            shutil.copytree(assets / "store", tmp_path / "ro")
    expected_files = _listing(tmp_path)
    if case.patch and case.patch.startswith("disk-full"):
        _fail_writes_under(monkeypatch, tmp_path)
    if case.patch and case.patch.startswith("read-only"):
        _make_read_only(monkeypatch, tmp_path / "ro")
        expected_files = _listing(tmp_path)
    try:
        res = cli(*argv, cwd=tmp_path)
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o755)
    if case.warns is not None:
        assert res.returncode == 0, res.stderr
        warnings = res.stderr.strip().splitlines()
        assert warnings and all(w.startswith("warning:") for w in warnings), res.stderr
        assert any(all(f in w for f in case.warns) for w in warnings), res.stderr
    else:
        assert_one_line_error(res, *case.fragments, code=case.code)
    assert _listing(tmp_path) == expected_files, "a failed command left files behind"
    assert _listing(assets) == before, "a command changed its input directory"


def test_matrix_covers_every_command_that_takes_a_model():
    commands = {c.id.split(":")[0] for c in CASES}
    assert set(KERAS_COMMANDS) <= commands
    assert {"export-run-onnx", "export-run-tflite", "benchmarks-compare", "benchmarks-report"} <= commands
    assert len(CASES) >= 200


def test_real_processes_report_bad_input_in_one_line(assets, run_cli, tmp_path):
    """The same contract through `python -m` (the real interpreter start-up and exit path)."""
    res = run_cli("export", "run", assets / "corrupt.tflite", "--input", assets / "x.npy")
    assert_one_line_error(res, "cannot load")
    res = run_cli("compress", "prune", assets / "lambda.h5", "-o", tmp_path / "p.keras")
    assert_one_line_error(res, "Lambda layer", "--unsafe")
    res = run_cli("benchmarks", "compare", assets / "garbage.db", assets / "store")
    assert_one_line_error(res, "not a results store")
    assert not list(tmp_path.iterdir())


def test_export_run_output_file_and_warnings(assets, cli, tmp_path):
    res = cli("export", "run", assets / "mlp.tflite", "--input", f"features={assets / 'xnan.npy'}", "-o",
              tmp_path / "y.npz")
    assert res.returncode == 0, res.stderr
    assert "input 'features' has 2 non-finite" in res.stderr and "output 'dense_2'" in res.stderr
    with np.load(tmp_path / "y.npz") as y:
        assert y["dense_2"].shape == (3, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npz"]


# ------------------------------------------------------------------------------------------ untrusted files


def test_lambda_code_never_runs_without_unsafe(tmp_path, monkeypatch):
    """A Lambda whose code writes a marker file: refused (and not run) in every Keras format unless unsafe."""
    from models.backend import keras
    from models.loading import load_keras

    marker = tmp_path / "code-ran"
    monkeypatch.setenv("CT_TEST_MARKER", str(marker))
    inp = keras.Input((3,), name="x")
    out = keras.layers.Lambda(lambda t: (open(__import__("os").environ["CT_TEST_MARKER"], "w").close(), t * 2.0)[1])(
        inp)
    model = keras.Model(inp, out)
    paths = [tmp_path / "m.keras", tmp_path / "m.h5", tmp_path / "m_savedmodel"]
    model.save(paths[0])
    model.save(paths[1])
    model.save(paths[2], save_format="tf")
    for path in paths:
        marker.unlink(missing_ok=True)
        with pytest.raises(UserError, match=r"Lambda layer.*refused in safe mode.*--unsafe"):
            load_keras(path)
        assert not marker.exists(), f"loading {path.name} in safe mode ran the file's code"
    marker.unlink(missing_ok=True)
    loaded = load_keras(paths[1], unsafe=True)  # the test can tell: with --unsafe the code does run
    assert marker.exists() and loaded.predict(np.ones((1, 3)), verbose=0)[0, 0] == 2.0


def test_unsafe_flag_is_honoured_by_the_cli(assets, cli):
    res = cli("compress", "preflight", assets / "lambda.keras", "--unsafe")
    assert res.returncode == 0, res.stderr


def test_probe_child_isolates_crashes_and_hangs(assets, tmp_path, monkeypatch):
    """A runtime that segfaults or hangs on one file: that file is an error, the others are still probed."""
    code = ("import os, signal, sys, time\n"
            "import export.probe as p\n"
            "real = p.probe_in_process\n"
            "def fake(path, providers=None):\n"
            "    name = os.path.basename(path)\n"
            "    if name.startswith('crash'): os.kill(os.getpid(), signal.SIGSEGV)\n"
            "    if name.startswith('abort'): os.abort()\n"
            "    if name.startswith('hang'): time.sleep(600)\n"
            "    return real(path, providers)\n"
            "p.probe_in_process = fake\n"
            "sys.exit(p.main())\n")
    monkeypatch.setattr(probe_mod, "child_command", lambda: [sys.executable, "-c", code])
    names = ["a.onnx", "crash.tflite", "b.tflite", "hang.onnx", "abort.onnx", "c.onnx"]
    for name in names:
        shutil.copy(assets / ("mlp" + Path(name).suffix), tmp_path / name)
    t0 = time.monotonic()
    results = probe_mod.probe([tmp_path / n for n in names], timeout=3, memo=False)
    assert time.monotonic() - t0 < 60
    ok = {Path(r.path).name: r for r in results}
    assert ok["a.onnx"].ok and ok["b.tflite"].ok and ok["c.onnx"].ok
    assert ok["crash.tflite"].error == f"the LiteRT runtime crashed loading {tmp_path / 'crash.tflite'} (signal 11)"
    assert ok["abort.onnx"].error == f"the ONNX runtime crashed loading {tmp_path / 'abort.onnx'} (signal 6)"
    assert "did not finish loading" in ok["hang.onnx"].error and "within 3 s" in ok["hang.onnx"].error


def test_export_run_reports_a_runtime_crash(assets, cli, tmp_path, monkeypatch):
    code = ("import os, signal, sys\nimport export.probe as p\n"
            "p.probe_in_process = lambda path, providers=None: os.kill(os.getpid(), signal.SIGSEGV)\n"
            "sys.exit(p.main())\n")
    monkeypatch.setattr(probe_mod, "child_command", lambda: [sys.executable, "-c", code])
    monkeypatch.setattr(probe_mod, "_memo", {})  # the same bytes probed fine earlier in this process
    shutil.copy(assets / "mlp.tflite", tmp_path / "boom.tflite")
    res = cli("export", "run", tmp_path / "boom.tflite", "--input", assets / "x.npy")
    assert_one_line_error(res, "the LiteRT runtime crashed loading", "boom.tflite", "(signal 11)")


def test_probe_child_never_imports_tensorflow(assets):
    code = ("import sys; from export import probe\n"
            f"r = probe.probe_in_process({str(assets / 'mlp.tflite')!r}); assert r.ok, r.error\n"
            f"r = probe.probe_in_process({str(assets / 'mlp.onnx')!r}); assert r.ok, r.error\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------------------------------- fuzz


def _mutate_onnx(base, rng: random.Random) -> bytes:
    """Structure-aware: wrong dims, dtypes, op types, edges, shapes, opsets, attributes; dropped/doubled nodes."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(base)
    g = m.graph
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(12)
        if op == 0:
            t = rng.choice(g.initializer)
            if t.dims:
                t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 2, 3, 100, -1, 1 << 20, 1 << 40])
        elif op == 1:
            rng.choice(g.initializer).data_type = rng.randrange(0, 25)
        elif op == 2:
            t = rng.choice(g.initializer)
            t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data) + 1)] if rng.random() < 0.7 else t.raw_data * 2
        elif op == 3:
            rng.choice(g.node).op_type = rng.choice(["Conv", "Gather", "Reshape", "Bogus", "LSTM", "Transpose",
                                                     "Concat", "Slice", "Loop", "If", "Split", "Softmax"])
        elif op == 4:
            n = rng.choice(g.node)
            if n.input:
                n.input[rng.randrange(len(n.input))] = rng.choice(["", "nope", n.output[0], g.input[0].name])
        elif op == 5:
            n = rng.choice(g.node)
            if rng.random() < 0.5 and n.input:
                del n.input[-1]
            else:
                n.input.append(rng.choice(["features", "nope", ""]))
        elif op == 6:
            d = g.input[0].type.tensor_type.shape.dim[rng.randrange(2)]
            value = rng.choice([0, 1, 5, -3, 1 << 20, 1 << 40, None])
            if value is None:
                d.dim_param = "x"
            else:
                d.dim_value = value
        elif op == 7:
            g.input[0].type.tensor_type.elem_type = rng.randrange(0, 25)
        elif op == 8:
            m.opset_import[0].version = rng.choice([0, 1, 7, 13, 99, 1000])
        elif op == 9:
            a = rng.choice(g.node).attribute.add()
            a.name, a.type, a.i = rng.choice(["axis", "perm", "shape", "bogus"]), onnx.AttributeProto.INT, \
                rng.choice([-100, 99, 1 << 40])
        elif op == 10:
            if len(g.node) > 1:
                del g.node[rng.randrange(len(g.node))]
        else:
            g.node.add().CopyFrom(rng.choice(g.node))
    return m.SerializeToString()


def _assert_clean(result, path):
    assert isinstance(result, probe_mod.ProbeResult), result
    if result.ok:
        return
    assert result.error and "\n" not in result.error and "Traceback" not in result.error, result.error
    assert str(path) in result.error or path.name in result.error, result.error


N_FUZZ_EXPORTED = 200  # per kind below: raw .onnx, structural .onnx, raw .tflite, metadata (sidecar) mutations


def test_fuzz_exported_model_loaders(assets, tmp_path):
    """Random mutations of valid .onnx/.tflite files: the probe returns ok or a clean one-line error for every
    one (crashes and hangs included), and files that probe ok are safe for the in-process runtime."""
    import onnx

    rng = random.Random(20240611)
    base = onnx.load(str(assets / "mlp.onnx"))
    onnx_bytes, tflite_bytes = (assets / "mlp.onnx").read_bytes(), (assets / "mlp.tflite").read_bytes()
    meta = json.loads((assets / "mlp.tflite.json").read_text())
    paths, kinds = [], []
    for i in range(N_FUZZ_EXPORTED):
        for kind, suffix, data in [("raw", ".onnx", lambda: _flip(onnx_bytes, rng)[0]),
                                   ("structure", ".onnx", lambda: _mutate_onnx(base, rng)),
                                   ("raw", ".tflite", lambda: _flip(tflite_bytes, rng)[0])]:
            path = tmp_path / f"{kind}{i}{suffix}"
            path.write_bytes(data())
            paths.append(path)
            kinds.append(kind)
        sidecar_model = tmp_path / f"meta{i}.tflite"  # valid graph, hostile metadata next to it
        sidecar_model.write_bytes(tflite_bytes)
        doc = _mutate_json(json.loads(json.dumps(meta)), rng)
        text = json.dumps(doc)
        if rng.random() < 0.3:
            text = _flip(text.encode(), rng)[0].decode("utf-8", errors="replace")
        Path(str(sidecar_model) + ".json").write_text(text)
        paths.append(sidecar_model)
        kinds.append("metadata")
    t0 = time.monotonic()
    results = probe_mod.probe(paths, timeout=60, memo=False)
    assert len(results) == len(paths) >= 800
    for path, result in zip(paths, results):
        _assert_clean(result, path)
    assert time.monotonic() - t0 < 120
    outcomes = {(k, r.ok) for k, r in zip(kinds, results)}
    assert ("raw", False) in outcomes and ("structure", False) in outcomes  # the mutations do break things
    # what the probe passed, the in-process runtime loads and runs, or refuses with RuntimeModelError
    passed = [p for p, r in zip(paths, results) if r.ok]
    assert passed
    for path in passed:
        try:
            model = runtime.load(path)
            feed = _batch_of_zeros(probe_mod.describe_inputs(model))
            if feed is not None:
                model.predict(feed)
        except runtime.RuntimeModelError as e:
            assert "\n" not in str(e)


def _batch_of_zeros(specs, batch=2):
    feed = {}
    for s in specs:
        try:
            dtype = np.dtype(s["dtype"])
        except TypeError:
            return None
        shape = [batch] + [1 if d is None else d for d in s["shape"][1:]]
        if not s["shape"] or dtype.kind not in "fiub" or np.prod(shape, dtype=np.float64) > 1 << 20:
            return None
        feed[s["name"]] = np.zeros(shape, dtype)
    return feed


N_FUZZ_KERAS = 60  # per kind below: raw .keras bytes, config JSON, weights inside the archive, raw .h5 bytes, h5 config


def test_fuzz_keras_loader(assets, tmp_path):
    """Random mutations of valid .keras/.h5 files: load_keras loads them or raises UserError, nothing else."""
    import h5py

    from models.loading import load_keras

    rng = random.Random(1234)
    keras_bytes, h5_bytes = (assets / "mlp.keras").read_bytes(), (assets / "mlp.h5").read_bytes()
    members = _zip_members(keras_bytes)
    config = json.loads(members["config.json"])
    with h5py.File(assets / "mlp.h5", "r") as f:
        h5_config = f.attrs["model_config"]
    h5_config = json.loads(h5_config.decode() if isinstance(h5_config, bytes) else h5_config)
    outcomes = {}
    for i in range(N_FUZZ_KERAS):
        cases = [("raw", ".keras", _flip(keras_bytes, rng)[0]),
                 ("config", ".keras", _rezip({**members, "config.json": json.dumps(
                     _mutate_json(json.loads(json.dumps(config)), rng)).encode()})),
                 ("weights", ".keras", _rezip({**members, "model.weights.h5": _flip(members["model.weights.h5"],
                                                                                    rng)[0]})),
                 ("raw", ".h5", _flip(h5_bytes, rng)[0])]
        for kind, suffix, data in cases:
            path = tmp_path / f"{kind}{i}{suffix}"
            path.write_bytes(data)
            outcomes.setdefault((kind, suffix), []).append(_load_outcome(load_keras, path))
        path = tmp_path / f"h5config{i}.h5"  # the model config inside a valid HDF5 file
        shutil.copy(assets / "mlp.h5", path)
        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = json.dumps(_mutate_json(json.loads(json.dumps(h5_config)), rng))
        outcomes.setdefault(("config", ".h5"), []).append(_load_outcome(load_keras, path))
    total = sum(len(v) for v in outcomes.values())
    assert total >= 300
    for key, values in outcomes.items():
        assert "UserError" in values, f"{key}: no mutation was refused; the fuzzer is not reaching the loader"


def _load_outcome(load_keras, path) -> str:
    try:
        load_keras(path)
        return "loaded"
    except UserError as e:
        message = str(e)
        assert message and "\n" not in message, message
        return "UserError"
    except BaseException as e:  # noqa: BLE001  (the point of the test)
        pytest.fail(f"{path.name}: load_keras raised {type(e).__name__}: {e}")


# ------------------------------------------------------------------------------------------ atomic writes


def test_atomic_write_disk_full_leaves_nothing(tmp_path, monkeypatch):
    from models import artifacts

    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    _fail_writes_under(monkeypatch, tmp_path)
    with pytest.raises(UserError, match="cannot write .*a.bin: No space left on device"):
        artifacts.atomic_write(target, b"new" * 1000)
    with pytest.raises(UserError, match="No space left on device"):
        artifacts.atomic_write_many({tmp_path / "m.onnx": b"model", tmp_path / "m.onnx.json": b"{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"] and target.read_bytes() == b"old"


def test_atomic_write_many_is_all_or_nothing(tmp_path, monkeypatch):
    from models import artifacts

    (tmp_path / "m.onnx").write_bytes(b"old model")
    (tmp_path / "m.onnx.json").write_text("old sidecar")
    real_write = artifacts._write_all
    calls = []

    def second_fails(fd, data):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(artifacts, "_write_all", second_fails)
    with pytest.raises(UserError):
        artifacts.atomic_write_many({tmp_path / "m.onnx": b"new model", tmp_path / "m.onnx.json": b"new"})
    assert (tmp_path / "m.onnx").read_bytes() == b"old model"
    assert (tmp_path / "m.onnx.json").read_text() == "old sidecar"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


def test_temporaries_of_killed_writers_are_cleaned_up(tmp_path):
    """A writer killed with SIGKILL leaves its temporary file; the next write of that file removes it."""
    code = ("import os, signal, sys\nfrom models.artifacts import atomic_path\n"
            f"with atomic_path({str(tmp_path / 'report.md')!r}) as tmp:\n"
            "    open(tmp, 'w').write('half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".report.md."), leftovers
    from models.artifacts import atomic_write

    atomic_write(tmp_path / "report.md", "complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


# ------------------------------------------------------------------------------------------- interruptions


SWEEP = ["--models", "mlp", "--tiny", "--quick", "--variants", "tflite-fp32", "tflite-dynamic", "onnx-fp32",
         "--runtimes", "litert", "litert-noxnnpack", "onnxruntime-cpu", "--batch", "1", "2", "--threads", "1"]


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def _keys(db: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return sorted(con.execute("SELECT key, model, variant, runtime, batch, threads, status FROM results"))


def _interrupt(out: Path, sig: int, after_rows: int, group: bool) -> subprocess.CompletedProcess:
    """Start a real sweep, wait until the store has ``after_rows`` rows, then send ``sig``."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "run", *SWEEP, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ))
    try:
        deadline = time.monotonic() + 300
        while _rows(out / "results.db") < after_rows and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the sweep ended before it could be interrupted: {proc.communicate()}"
        if group:
            os.killpg(proc.pid, sig)  # Ctrl-C in a terminal: the whole foreground process group
        else:
            os.kill(proc.pid, sig)  # the sweep process alone dies (kill -9, the OOM killer)
        out_text, err_text = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned measurement workers, if any
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_text, err_text)


def test_interrupted_and_killed_sweeps_resume_to_the_same_rows(cli, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    res = cli("benchmarks", "run", *SWEEP, "--out", reference)  # uninterrupted (and builds the variants)
    assert res.returncode == 0, res.stderr
    expected = _keys(reference / "results.db")
    assert len(expected) == 10 and all(r[-1] == "ok" for r in expected), expected

    first = _interrupt(resumed, signal.SIGINT, after_rows=1, group=True)
    assert first.returncode == 130, (first.returncode, first.stderr)
    assert "interrupted" in first.stderr and "Traceback" not in first.stderr, first.stderr
    after_sigint = _keys(resumed / "results.db")
    assert 0 < len(after_sigint) < len(expected)
    assert not (resumed / "report.md").exists(), "an interrupted sweep wrote a report"

    second = _interrupt(resumed, signal.SIGKILL, after_rows=len(after_sigint) + 1, group=False)
    assert second.returncode == -signal.SIGKILL
    after_sigkill = _keys(resumed / "results.db")  # PRAGMA integrity_check inside
    assert set(after_sigint) < set(after_sigkill) and len(after_sigkill) < len(expected)

    res = cli("benchmarks", "run", *SWEEP, "--out", resumed)
    assert res.returncode == 0, res.stderr
    new = len(expected) - len(after_sigkill)
    assert f"{new} new measurement(s); {len(expected)} row(s)" in res.stdout.replace("\n", " "), res.stdout
    final = _keys(resumed / "results.db")
    assert [r[:-1] for r in final] == [r[:-1] for r in expected] and all(r[-1] == "ok" for r in final)
    with sqlite3.connect(resumed / "results.db") as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM results").fetchone() == (len(expected),) * 2
    assert sorted(p.name for p in resumed.iterdir()) == ["report.html", "report.md", "results.db", "results.json"]
