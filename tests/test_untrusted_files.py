"""Untrusted files: serialized code is refused without --unsafe (and provably not run); native runtimes
load files in a child process, so a crash or a hang is a reported error; seeded fuzzing of every loader
with byte-level and structure-aware mutations of valid files."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile import assert_one_line_error, flip_bytes, mutate_json, rezip, zip_members

from export import probe as probe_mod
from export.probe_child import describe_inputs
from export import runtime
from models.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


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
            "import export.probe_child as p\n"
            "real = p.probe_in_process\n"
            "def fake(path, providers=None, batch_check=False):\n"
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
    # the per-file timeout also covers a fresh child's start (interpreter, ONNX Runtime, LiteRT: a second idle, more
    # on a loaded machine), so it is well above that; the hang's result below shows it was cut at the timeout
    results = probe_mod.probe([tmp_path / n for n in names], timeout=20, memo=False)
    ok = {Path(r.path).name: r for r in results}
    assert ok["a.onnx"].ok and ok["b.tflite"].ok and ok["c.onnx"].ok
    assert ok["crash.tflite"].error == f"the LiteRT runtime crashed loading {tmp_path / 'crash.tflite'} (signal 11)"
    assert ok["abort.onnx"].error == f"the ONNX runtime crashed loading {tmp_path / 'abort.onnx'} (signal 6)"
    assert "did not finish loading" in ok["hang.onnx"].error and "within 20 s" in ok["hang.onnx"].error


def test_probe_reads_a_child_whose_pipe_fd_is_above_1023(assets, tmp_path):
    """A long sweep's driver holds many descriptors: select() cannot wait on one >= FD_SETSIZE (a fresh-clone
    `make bench` died with "filedescriptor out of range in select()"), the probe's wait must."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.fail(f"this host caps open files at {hard}: the case cannot be set up")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert max(held) > 1024
        shutil.copy(assets / "mlp.onnx", tmp_path / "late.onnx")
        (result,) = probe_mod.probe([tmp_path / "late.onnx"], memo=False)
        assert result.ok, result.error
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_export_run_reports_a_runtime_crash(assets, cli, tmp_path, monkeypatch):
    code = ("import os, signal, sys\nimport export.probe_child as p\n"
            "p.probe_in_process = lambda path, providers=None, batch_check=False: os.kill(os.getpid(), signal.SIGSEGV)\n"
            "sys.exit(p.main())\n")
    monkeypatch.setattr(probe_mod, "child_command", lambda: [sys.executable, "-c", code])
    monkeypatch.setattr(probe_mod, "_memo", {})  # the same bytes probed fine earlier in this process
    shutil.copy(assets / "mlp.tflite", tmp_path / "boom.tflite")
    res = cli("export", "run", tmp_path / "boom.tflite", "--input", assets / "x.npy")
    assert_one_line_error(res, "the LiteRT runtime crashed loading", "boom.tflite", "(signal 11)")


def test_probe_child_never_imports_tensorflow(assets):
    code = ("import sys; from export import probe_child\n"
            f"r = probe_child.probe_in_process({str(assets / 'mlp.tflite')!r}); assert r.ok, r.error\n"
            f"r = probe_child.probe_in_process({str(assets / 'mlp.onnx')!r}); assert r.ok, r.error\n"
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
        for kind, suffix, data in [("raw", ".onnx", lambda: flip_bytes(onnx_bytes, rng)[0]),
                                   ("structure", ".onnx", lambda: _mutate_onnx(base, rng)),
                                   ("raw", ".tflite", lambda: flip_bytes(tflite_bytes, rng)[0])]:
            path = tmp_path / f"{kind}{i}{suffix}"
            path.write_bytes(data())
            paths.append(path)
            kinds.append(kind)
        sidecar_model = tmp_path / f"meta{i}.tflite"  # valid graph, hostile metadata next to it
        sidecar_model.write_bytes(tflite_bytes)
        doc = mutate_json(json.loads(json.dumps(meta)), rng)
        text = json.dumps(doc)
        if rng.random() < 0.3:
            text = flip_bytes(text.encode(), rng)[0].decode("utf-8", errors="replace")
        Path(str(sidecar_model) + ".json").write_text(text)
        paths.append(sidecar_model)
        kinds.append("metadata")
    results = probe_mod.probe(paths, timeout=60, memo=False)  # per file: a guard against a hang
    assert len(results) == len(paths) >= 800
    for path, result in zip(paths, results):
        _assert_clean(result, path)
    outcomes = {(k, r.ok) for k, r in zip(kinds, results)}
    assert ("raw", False) in outcomes and ("structure", False) in outcomes  # the mutations do break things
    # what the probe passed, the in-process runtime loads and runs, or refuses with RuntimeModelError
    passed = [p for p, r in zip(paths, results) if r.ok]
    assert passed
    for path in passed:
        try:
            model = runtime.load(path)
            feed = _batch_of_zeros(describe_inputs(model))
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
    members = zip_members(keras_bytes)
    config = json.loads(members["config.json"])
    with h5py.File(assets / "mlp.h5", "r") as f:
        h5_config = f.attrs["model_config"]
    h5_config = json.loads(h5_config.decode() if isinstance(h5_config, bytes) else h5_config)
    outcomes = {}
    for i in range(N_FUZZ_KERAS):
        cases = [("raw", ".keras", flip_bytes(keras_bytes, rng)[0]),
                 ("config", ".keras", rezip({**members, "config.json": json.dumps(
                     mutate_json(json.loads(json.dumps(config)), rng)).encode()})),
                 ("weights", ".keras", rezip({**members, "model.weights.h5": flip_bytes(members["model.weights.h5"],
                                                                                    rng)[0]})),
                 ("raw", ".h5", flip_bytes(h5_bytes, rng)[0])]
        for kind, suffix, data in cases:
            path = tmp_path / f"{kind}{i}{suffix}"
            path.write_bytes(data)
            outcomes.setdefault((kind, suffix), []).append(_load_outcome(load_keras, path))
        path = tmp_path / f"h5config{i}.h5"  # the model config inside a valid HDF5 file
        shutil.copy(assets / "mlp.h5", path)
        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = json.dumps(mutate_json(json.loads(json.dumps(h5_config)), rng))
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
