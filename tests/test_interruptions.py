"""Atomic writes, and interrupted (SIGINT) or killed (SIGKILL) sweeps: the store stays intact and the rerun
completes with the same rows as an uninterrupted run, no duplicates, no stray files."""
from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile import fail_writes_under

from models.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ atomic writes


def test_atomic_write_disk_full_leaves_nothing(tmp_path, monkeypatch):
    from models import artifacts

    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    fail_writes_under(monkeypatch, tmp_path)
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


# a guard against a hang, never a speed limit: on an idle machine this sweep stores its first row within ~30 s of its
# start and exits within seconds of a signal; with other test workers on the same cores it takes several times that
HANG_S = 600
SWEEP = ["--models", "mlp", "--tiny", "--quick", "--variants", "tflite-fp32", "tflite-dynamic", "onnx-fp32",
         "--runtimes", "litert", "litert-noxnnpack", "onnxruntime-cpu", "--batch", "1", "2", "--threads", "1"]


def _keys(db: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return sorted(con.execute("SELECT key, model, variant, runtime, batch, threads, status FROM results"))


def _interrupt(out: Path, sig: int, after_rows: int, group: bool) -> subprocess.CompletedProcess:
    """Start a real sweep and send ``sig`` once it has stored ``after_rows`` new rows: the sweep's test hook
    (benchmarks.sweep.pause_for_test) creates a marker file at that point and waits, so the signal never races
    the end of the sweep."""
    marker = out.parent / f"{out.name}-paused-{sig}"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, CT_TEST_PAUSE_AFTER_ROWS=str(after_rows), CT_TEST_PAUSE_FILE=str(marker))
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "run", *SWEEP, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + HANG_S
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None and not marker.exists():  # neither paused nor ended: stop it to read what it printed
            os.killpg(proc.pid, signal.SIGKILL)
        assert proc.poll() is None and marker.exists(), f"the sweep never paused: {proc.communicate()}"
        if group:
            os.killpg(proc.pid, sig)  # Ctrl-C in a terminal: the whole foreground process group
        else:
            os.kill(proc.pid, sig)  # the sweep process alone dies (kill -9, the OOM killer)
        try:
            out_text, err_text = proc.communicate(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out_text, err_text = proc.communicate()
            pytest.fail(f"the sweep had not exited {HANG_S} s after signal {sig}; it printed:\n{out_text[-2000:]}"
                        f"\n{err_text[-3000:]}")
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
    assert len(after_sigint) == 1  # interrupted right after the first stored row
    # Ctrl-C leaves a complete report of what was stored (written atomically: no temporary files left)
    assert sorted(p.name for p in resumed.iterdir()) == [".ct-outputs.json", "report.html", "report.md", "results.db",
                                                         "results.json"]
    stored, = json.loads((resumed / "results.json").read_text())
    assert f"| {stored['variant']} | {stored['runtime']} |" in (resumed / "report.md").read_text()

    second = _interrupt(resumed, signal.SIGKILL, after_rows=2, group=False)  # two more rows, then kill -9
    assert second.returncode == -signal.SIGKILL
    after_sigkill = _keys(resumed / "results.db")  # PRAGMA integrity_check inside
    assert set(after_sigint) < set(after_sigkill) and len(after_sigkill) == 3

    res = cli("benchmarks", "run", *SWEEP, "--out", resumed)
    assert res.returncode == 0, res.stderr
    new = len(expected) - len(after_sigkill)
    assert f"{new} new measurement(s); {len(expected)} row(s)" in res.stdout.replace("\n", " "), res.stdout
    final = _keys(resumed / "results.db")
    assert [r[:-1] for r in final] == [r[:-1] for r in expected] and all(r[-1] == "ok" for r in final)
    with sqlite3.connect(resumed / "results.db") as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM results").fetchone() == (len(expected),) * 2
    assert sorted(p.name for p in resumed.iterdir()) == [".ct-outputs.json", "phases.json", "report.html", "report.md",
                                                         "results.db", "results.json"]
