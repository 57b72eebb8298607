"""Where timed measurements run: the Executor seam between the sweep (the driver) and the measuring workers.

The sweep turns each (variant, runtime, threads) into a :class:`~benchmarks.tasks.Job`, hands a model's jobs to
an executor and stores the answers itself: workers only measure and answer, the driver alone writes the store.
``LocalExecutor`` runs them one at a time in worker processes on this machine; ``benchmarks.executors.ray_cluster``
spreads them over a Ray cluster, one measurement per node at a time.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterable, Iterator, Protocol


from benchmarks.runtimes import by_name
from benchmarks.tasks import Job

CHILD_TIMEOUT_S = 600
WORKER_RSS_LIMIT_MB = 1200  # a worker holding more than this after a measurement is replaced (the sweep's peak)
IDLE_WORKER_LIMIT_MB = 800  # ... and more than this when a model's build starts (a TensorFlow worker idles at ~0.7 GB)


def child_command() -> list[str]:
    return [sys.executable, "-m", "benchmarks.child"]


def worker_group(runtime: str) -> str:
    """Runtimes of one artifact format share a worker (keras and keras-predict; LiteRT with and without XNNPACK):
    each TensorFlow worker holds ~0.7 GB, and only one measurement runs at a time anyway."""
    return by_name(runtime).format


class Workers:
    """One measurement worker process per (runtime format, threads), restarted after a crash or a hang."""

    def __init__(self, timeout: float = CHILD_TIMEOUT_S):
        self.timeout = timeout
        self._procs: dict[tuple, subprocess.Popen] = {}

    def _worker(self, key) -> subprocess.Popen:
        proc = self._procs.get(key)
        if proc is None or proc.poll() is not None:
            proc = subprocess.Popen(child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
            self._procs[key] = proc
        return proc

    def request(self, request: dict) -> dict:
        """Send one request; a crash, a hang or garbage output becomes {"error": reason}."""
        key = (worker_group(request["runtime"]), request["threads"])
        proc = self._worker(key)
        answer: list[str] = []

        def read():
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                for line in proc.stdout:
                    if line.startswith("CT-RESULT "):
                        answer.append(line)
                        return
            except (BrokenPipeError, OSError):
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(self.timeout)
        if answer:
            result = json.loads(answer[0][len("CT-RESULT "):])
            if (result.get("rss_after_mb") or 0) > WORKER_RSS_LIMIT_MB:  # still holding a big model's memory
                self._kill(key)  # a fresh worker takes the next measurement
            return result
        if reader.is_alive():
            self._kill(key)
            return {"error": f"timed out after {self.timeout:.0f} s"}
        code = proc.wait()
        self._procs.pop(key, None)
        if code == -signal.SIGINT:  # Ctrl-C reached the worker first: the sweep is interrupted, nothing failed
            raise KeyboardInterrupt
        if code < 0:
            return {"error": f"runtime crashed (signal {-code})"}
        tail = (proc.stderr.read().strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"runtime process exited with code {code}: {tail}"}

    def _kill(self, key) -> None:
        proc = self._procs.pop(key, None)
        if proc is not None:
            proc.kill()
            proc.wait()

    def retire_above(self, limit_mb: float) -> list[tuple]:
        """Stop the idle workers whose resident memory is above ``limit_mb`` (fresh ones start on demand)."""
        retired = []
        for key, proc in list(self._procs.items()):
            try:
                rss = next(int(line.split()[1]) / 1024 for line in open(f"/proc/{proc.pid}/status")
                           if line.startswith("VmRSS:"))
            except (OSError, StopIteration, ValueError):
                continue
            if rss > limit_mb:
                self._kill(key)
                retired.append(key)
        return retired

    def kill_all(self) -> None:
        """Interrupted: stop every worker now rather than let it finish its measurement."""
        for key in list(self._procs):
            self._kill(key)

    def close(self) -> None:
        for key in list(self._procs):
            proc = self._procs[key]
            try:
                proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._kill(key)


class Executor(Protocol):
    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, dict]]:
        """Measure ``jobs``; yield each with its answer (benchmarks.child's result, or {"error": reason}) as it
        completes. Every job is answered exactly once."""

    def kill_all(self) -> None:
        """Interrupted: stop every measurement now."""

    def before_build(self) -> None:
        """A model's variants are about to be built here: release what idle workers hold."""

    def close(self) -> None:
        """Done: let the workers exit."""


class LocalExecutor:
    """Today's worker processes on this machine, one measurement at a time (fair timing on one machine)."""

    def __init__(self, workers: Workers | None = None):
        self.workers = workers or Workers()

    def run(self, jobs):
        for job in jobs:
            yield job, self.workers.request(job.task.request(job.artifact_path, job.inputs_path))

    def kill_all(self) -> None:
        self.workers.kill_all()

    def before_build(self) -> None:
        """Builds are the sweep's memory peak: idle workers left holding a big model's memory make way."""
        self.workers.retire_above(IDLE_WORKER_LIMIT_MB)

    def close(self) -> None:
        self.workers.close()
