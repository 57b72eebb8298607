"""Load exported models in a child process first, so a file that crashes a native runtime is an error line.

ONNX Runtime and LiteRT parse model files in C++; a corrupt or hostile ``.onnx``/``.tflite`` can make
them abort or segfault, which would kill the command (or the app) with no message. ``probe(paths)``
loads every file with :mod:`export.runtime` in ONE child process (:mod:`export.probe_child`) and runs
one inference on zeros of the declared input shapes. A child that dies is restarted for the remaining
files and the file it died on is reported as "the <runtime> runtime crashed loading <file> (signal N)";
a child that hangs is killed after ``timeout`` seconds.

Like :mod:`export.runtime`, this module never imports TensorFlow: numpy and the runtimes only.

Child protocol: one JSON request per line on stdin (``{"path": ..., "providers": [...]}``), or paths
as arguments; one ``CT-PROBE {json}`` line per file on the child's private result channel (its stdout,
with the runtimes' own fd-1 prints moved to stderr).
"""
from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "CT-PROBE "
DEFAULT_TIMEOUT_S = 120.0
MAX_PROBE_ELEMENTS = 1 << 26  # zeros larger than this (256 MiB of float32) are not fed: the load is still checked
RUNTIME_NAMES = {".onnx": "ONNX Runtime", ".tflite": "LiteRT"}
_CRASH_NAMES = {".onnx": "ONNX", ".tflite": "LiteRT"}  # "the ONNX runtime crashed ..."
ROOT = Path(__file__).resolve().parents[1]

# What other formats look like, so a file given to the wrong command gets a useful message.
_MAGIC = [
    (0, b"PK\x03\x04", "a zip archive (a .keras model?)"),
    (0, b"\x89HDF\r\n\x1a\n", "an HDF5 file (a .h5 Keras model?)"),
    (0, b"SQLite format 3\x00", "an SQLite database"),
    (0, b"\x93NUMPY", "a NumPy .npy array"),
    (4, b"TFL3", "a TFLite model"),
]


@dataclass
class ProbeResult:
    """What the child found: ok (loaded and ran once on zeros) or a one-line error."""

    path: str
    ok: bool
    error: str | None = None
    runtime: str | None = None
    inputs: list[dict] = field(default_factory=list)  # {"name", "shape" (None: any size), "dtype", "batch_flexible"}
    outputs: list[dict] = field(default_factory=list)  # {"name", "shape", "dtype"} of the zero-input run
    notes: list[str] = field(default_factory=list)


def runtime_name(path: str | os.PathLike) -> str:
    return RUNTIME_NAMES.get(Path(path).suffix.lower(), "model")


def sniff(path: str | os.PathLike) -> str | None:
    """A short description of the file's real format when it is recognisably not ``path``'s own, else None."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    suffix = path.suffix.lower()
    for offset, magic, what in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if suffix == ".tflite" and magic == b"TFL3":
                return None
            return what
    return None


def precheck(path: str | os.PathLike) -> str | None:
    """Problems that need no runtime: missing, empty, unreadable, wrong suffix or wrong format. None if none."""
    path = Path(path)
    if not path.exists():
        return f"no such file: {path}"
    if path.is_dir():
        return f"{path} is a directory, not an exported model file"
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return (f"{path} is a Keras model, not an exported one; export it first "
                f"(python -m export onnx|tflite {path})")
    if suffix not in RUNTIME_NAMES:
        return f"{path}: unknown model format {suffix or '(no suffix)'}; expected .onnx or .tflite"
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    if size == 0:
        return f"{path} is empty"
    other = sniff(path)
    if other:
        return f"{path} is {other}, not {'an ONNX' if suffix == '.onnx' else 'a TFLite'} model"
    return None


def child_command() -> list[str]:
    return [sys.executable, "-m", "export.probe_child"]


class _Child:
    """One ``python -m export.probe_child`` process; ``ask`` returns a result dict, or raises _Died / _Hung."""

    def __init__(self):
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.proc = subprocess.Popen(child_command(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT, env=env)
        self.buffer = b""

    def ask(self, request: dict, timeout: float) -> dict:
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Died(self._exit_code()) from None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode("utf-8", errors="replace")
                if text.startswith(PREFIX):
                    try:
                        answer = json.loads(text[len(PREFIX):])
                    except ValueError:
                        continue  # not ours after all: keep waiting for the real answer (or the timeout)
                    if isinstance(answer, dict) and set(answer) <= _FIELDS and "ok" in answer:
                        return answer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise _Hung()
            with selectors.DefaultSelector() as waiting:  # epoll/poll: select() fails on fds over 1023
                waiting.register(fd, selectors.EVENT_READ)
                if not waiting.select(remaining):
                    continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _Died(self._exit_code())
            self.buffer += chunk

    def _exit_code(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def last_stderr_line(self) -> str:
        try:
            self.stderr.seek(0)
            lines = [ln for ln in self.stderr.read().decode("utf-8", errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].strip()[:300] if lines else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc.stdout.close()
        self.stderr.close()


class _Died(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


class _Hung(Exception):
    pass


_memo: dict[tuple, ProbeResult] = {}
_FIELDS = set(ProbeResult.__dataclass_fields__)


def _memo_key(path: Path, providers, batch_check: bool = False) -> tuple | None:
    """The file's bytes and its metadata sidecar's (the runtime reads both)."""
    sidecar = Path(str(path) + ".json")
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        side = hashlib.sha256(sidecar.read_bytes()).hexdigest() if sidecar.is_file() else None
    except OSError:
        return None
    return digest, side, path.suffix.lower(), tuple(providers or ()), batch_check


def probe(paths, *, timeout: float = DEFAULT_TIMEOUT_S, providers=None, memo: bool = True,
          batch_check: bool = False) -> list[ProbeResult]:
    """Probe every path in one child process; one :class:`ProbeResult` per path, in order.

    Never raises for a bad file: crashes, hangs (``timeout`` seconds per file) and errors are results.
    ``memo`` reuses this process's earlier result for a file with the same bytes. ``batch_check`` also
    runs each file on a batch of 3 and one sample at a time (:func:`export.probe_child.batch_problem`).
    """
    doing = "running" if batch_check else "loading"
    paths = [Path(p) for p in paths]
    results: list[ProbeResult | None] = [None] * len(paths)
    todo = []
    for i, path in enumerate(paths):
        problem = precheck(path)
        if problem:
            results[i] = ProbeResult(str(path), False, problem, runtime_name(path))
            continue
        key = _memo_key(path, providers, batch_check) if memo else None
        if key is not None and key in _memo:
            cached = _memo[key]
            error = cached.error and cached.error.replace(cached.path, str(path))
            results[i] = ProbeResult(str(path), cached.ok, error, cached.runtime, cached.inputs, cached.outputs,
                                     list(cached.notes))
            continue
        todo.append((i, path, key))
    child = None
    try:
        for i, path, key in todo:
            if child is None:
                child = _Child()
            request = {"path": str(path.resolve()), "providers": list(providers) if providers else None,
                       "batch_check": batch_check}
            name = _CRASH_NAMES.get(path.suffix.lower(), "model")
            try:
                answer = child.ask(request, timeout)
            except _Died as died:
                code, tail = died.code, child.last_stderr_line()
                child.close()
                child = None
                if code == -signal.SIGINT:  # Ctrl-C reached the child first: an interruption, not a crash
                    raise KeyboardInterrupt
                if code is not None and code < 0:
                    error = f"the {name} runtime crashed {doing} {path} (signal {-code})"
                else:
                    error = f"the {name} runtime process exited with code {code} {doing} {path}" + (
                        f": {tail}" if tail else "")
                results[i] = ProbeResult(str(path), False, error, runtime_name(path))
                continue
            except _Hung:
                child.close()
                child = None
                results[i] = ProbeResult(str(path), False,
                                         f"the {name} runtime did not finish {doing} {path} within {timeout:.0f} s",
                                         runtime_name(path))
                continue
            answer["error"] = answer.get("error") and answer["error"].replace(request["path"], str(path))
            answer["path"] = str(path)
            result = ProbeResult(**answer)
            results[i] = result
            if memo and key is not None:
                _memo[key] = result
    finally:
        if child is not None:
            child.close()
    return results
