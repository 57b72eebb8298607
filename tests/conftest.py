"""Test set-up: an isolated artifact cache per session, and tiny trained zoo models shared by all tests."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_CACHE = tempfile.mkdtemp(prefix="ct-test-cache-")
os.environ.setdefault("CT_CACHE_DIR", _CACHE)
os.environ["CT_CACHE_DIR"] = os.environ.get("CT_TEST_CACHE_DIR", os.environ["CT_CACHE_DIR"])

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
    """Run ``python -m <module> args...`` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    def _run(module, *args, timeout=600, cwd=None):
        env = dict(os.environ)
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=cwd or ROOT)

    return _run
