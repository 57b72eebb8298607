"""Test set-up: an isolated artifact cache per session, and tiny trained zoo models shared by all tests."""
import os
from dataclasses import dataclass
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # user_models: the models a user brings (shared with the README)
# each test process (each pytest-xdist worker too) gets a cache of its own, never the user's CT_CACHE_DIR: workers
# that shared one trained the same tiny model at once, and a model file could then meet the other's sidecar
os.environ["CT_CACHE_DIR"] = os.environ.get("CT_TEST_CACHE_DIR") or tempfile.mkdtemp(prefix="ct-test-cache-")

import models  # noqa: E402  (after the cache is chosen)
from models.training import train  # noqa: E402

ZOO = models.names()


@pytest.fixture(scope="session")
def cache_dir():
    return Path(os.environ["CT_CACHE_DIR"])


_trained = {}


def tiny_trained(name):
    """Train (once per session) the tiny configuration of a zoo model."""
    if name not in _trained:
        _trained[name] = train(models.get(name), tiny=True, seed=0)
    return _trained[name]


@pytest.fixture
def run_cli():
    """Run ``python -m <module> args...`` in a fresh interpreter (the real thing, slow: a few per suite)."""
    import subprocess

    def _run(module, *args, timeout=600, cwd=None):
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ), cwd=cwd or ROOT)

    return _run


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run a CLI's main() in this process through the same error wrapper as ``python -m`` (fast)."""
    import importlib

    from models.cli import run

    def _run(module, *args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        main = importlib.import_module(f"{module}.__main__").main
        capsys.readouterr()
        try:
            code = run(main, [str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            code = e.code if isinstance(e.code, int) else 2
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return _run


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """A directory of valid, broken, hostile and mislabelled model files (see tests/hostile.py)."""
    from hostile import build_assets

    return build_assets(tmp_path_factory.mktemp("assets"))
