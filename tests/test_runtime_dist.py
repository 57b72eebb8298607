"""The runtime distribution on its own: a clean venv with only ``runtime/`` installed runs the toolkit's exports.

One venv per module: ``pip install ./runtime`` first (ONNX only: checked before LiteRT is added), then
``pip install './runtime[litert]'``. pip reaches the package index here; a failed install fails the test with
pip's output, it never skips. The figures (size, install time, parity) are printed (``pytest -s``).
"""
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from export.quantize.ptq import QuantRecipe
from conftest import ROOT, tiny_trained
from export import exporter, runtime
from models.subject import Subject

# the runtime venv is built once: under xdist (make test) the whole module runs on one worker
pytestmark = pytest.mark.xdist_group("runtime_dist")
PIP_TIMEOUT = 300
# Run inside the runtime venv: load each file, run it on x.npy, save the outputs; JSON report on stdout.
APP_SCRIPT = """
import importlib.util, json, sys
import numpy as np
import ct_runtime

x = np.load(sys.argv[1])
report = {"tensorflow": importlib.util.find_spec("tensorflow") is not None,
          "toolkit": any(importlib.util.find_spec(m) is not None for m in ("export", "models", "compress")),
          "litert": importlib.util.find_spec("ai_edge_litert") is not None, "files": {}}
for path in sys.argv[2:]:
    try:
        model = ct_runtime.load(path)
        np.save(path + ".out.npy", model.predict(x))
        report["files"][path] = {"metadata": model.metadata, "inputs": model.input_names}
    except ct_runtime.RuntimeModelError as e:
        report["files"][path] = {"error": str(e)}
print(json.dumps(report))
"""


@dataclass
class Stage:
    """One install into the venv: what it took and what the venv could then do."""
    seconds: float
    size_mb: float
    report: dict = field(default_factory=dict)


@dataclass
class RuntimeEnv:
    python: Path
    workdir: Path
    onnx_only: Stage
    both: Stage
    files: dict  # name -> exported path


def _size_mb(path: Path) -> float:
    """Disk usage like ``du -sm`` (allocated blocks, each hard link once)."""
    seen, total = set(), 0
    for root, _, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total / 2**20


def _clean_env() -> dict:
    """The app's environment: nothing of the toolkit's interpreter or checkout leaks in."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _pip(python: Path, *args: str) -> float:
    start = time.perf_counter()
    res = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=PIP_TIMEOUT,
                         env=_clean_env())
    assert res.returncode == 0, f"pip {' '.join(args)} failed (exit {res.returncode}): {res.stderr[-3000:]}"
    return time.perf_counter() - start


def _run_app(python: Path, workdir: Path, files) -> dict:
    res = subprocess.run([str(python), str(workdir / "app.py"), str(workdir / "x.npy"), *map(str, files)],
                         capture_output=True, text=True, timeout=120, cwd=workdir, env=_clean_env())
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _subject(name):
    t = tiny_trained(name)
    return Subject(name, t.load(), t.path, t.spec, t.config, t.splits(), t.seed)


@pytest.fixture(scope="module")
def cnn():
    return _subject("cnn")


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory, cnn) -> RuntimeEnv:
    work = tmp_path_factory.mktemp("runtime-dist")
    files = {"onnx": work / "cnn.onnx", "tflite": work / "cnn-int8.tflite"}
    assert exporter.export(cnn, QuantRecipe("onnx"), files["onnx"]).written
    assert exporter.export(cnn, QuantRecipe("tflite", "int8", int8_io=True), files["tflite"]).written
    for path in files.values():
        Path(str(path) + ".json").unlink()  # only the file travels with the app: metadata from inside it
    np.save(work / "x.npy", cnn.splits.test.x[:16])
    (work / "app.py").write_text(APP_SCRIPT)
    # a copy, so that building the wheel leaves no build/ or egg-info in the checkout
    source = shutil.copytree(ROOT / "runtime", work / "runtime-src",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = work / "venv"
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"python -m venv failed: {res.stderr[-2000:]}"
    python = venv / "bin" / "python"
    # what `pip install ./runtime` then `pip install './runtime[litert]'` do, building the wheel once
    seconds = time.perf_counter() - start + _pip(python, "wheel", "-q", "--no-deps", "-w", str(work), str(source))
    (wheel,) = work.glob("keras_compress_runtime-*.whl")
    seconds += _pip(python, "install", "-q", str(wheel))
    onnx_only = Stage(seconds, _size_mb(venv), _run_app(python, work, files.values()))
    seconds += _pip(python, "install", "-q", f"{wheel}[litert]")
    both = Stage(seconds, _size_mb(venv), _run_app(python, work, files.values()))
    print(f"\nruntime-only venv: ONNX only {onnx_only.size_mb:.0f} MB in {onnx_only.seconds:.1f} s; "
          f"with LiteRT {both.size_mb:.0f} MB in {both.seconds:.1f} s (venv creation and pip included)")
    return RuntimeEnv(python, work, onnx_only, both, files)


def test_runtime_venv_has_neither_tensorflow_nor_the_toolkit(runtime_env):
    res = subprocess.run([str(runtime_env.python), "-c", "import tensorflow"], capture_output=True, text=True,
                         cwd=runtime_env.workdir, env=_clean_env())
    assert res.returncode != 0 and "No module named 'tensorflow'" in res.stderr
    for stage in (runtime_env.onnx_only, runtime_env.both):
        assert stage.report["tensorflow"] is False and stage.report["toolkit"] is False


def test_onnx_only_install_runs_onnx_and_names_the_extra_for_tflite(runtime_env):
    report = runtime_env.onnx_only.report
    assert report["litert"] is False, "pip install ./runtime pulled in ai-edge-litert"
    assert "error" not in report["files"][str(runtime_env.files["onnx"])]
    error = report["files"][str(runtime_env.files["tflite"])]["error"]
    assert error.startswith("LiteRT is not installed") and "keras-compress-runtime[litert]" in error


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_files_run_from_the_runtime_venv_match_the_toolkit(fmt, runtime_env, cnn):
    path = runtime_env.files[fmt]
    loaded = runtime_env.both.report["files"][str(path)]
    assert "error" not in loaded, loaded.get("error")
    got = np.load(str(path) + ".out.npy")
    x = np.load(runtime_env.workdir / "x.npy")
    toolkit = runtime.load(path).predict(x)
    keras = cnn.model.predict(x, verbose=0)
    diff_toolkit, diff_keras = float(np.max(np.abs(got - toolkit))), float(np.max(np.abs(got - keras)))
    print(f"\n{path.name} from the runtime venv: max abs diff {diff_toolkit:.3g} vs the toolkit's runtime, "
          f"{diff_keras:.3g} vs Keras")
    meta = loaded["metadata"]  # read from inside the file (the sidecar was removed)
    assert meta["model"] == "cnn" and meta["labels"] == [str(i) for i in range(10)]
    assert loaded["inputs"] == ["image"]
    if fmt == "onnx":
        assert diff_toolkit <= 1e-5 and diff_keras <= cnn.spec.export_atol
    else:  # int8 in and out: the runtime (de)quantized with the file's scales; one output step of slack
        step = meta["quantization_params"]["outputs"]
        assert diff_toolkit <= max(q["scale"] for q in step.values()) + 1e-6


def test_example_app_runs_from_the_runtime_venv(runtime_env):
    res = subprocess.run([str(runtime_env.python), str(ROOT / "examples" / "embed_app.py"),
                          str(runtime_env.files["tflite"])], capture_output=True, text=True, timeout=120,
                         cwd=runtime_env.workdir, env=_clean_env())
    assert res.returncode == 0, res.stderr
    assert "inputs ['image']" in res.stdout and "accuracy on 8 images" in res.stdout
    assert "preprocessing: grayscale 28x28" in res.stdout  # from the file's metadata
