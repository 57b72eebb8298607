"""Build models' missing variants in a child process (``python -m benchmarks.build``).

Converters and fine-tuning hold on to memory TensorFlow never gives back: built in the sweep's own process,
the whole zoo's variants peaked at 22.5 GB of resident memory. In a child the memory goes back when it exits
(after a model that left it big: see Builder), and a converter that crashes is one failed variant with the
signal in its reason, not a dead sweep.

Protocol: the parent writes one JSON request per model on the child's stdin; the child answers on a private
channel (its original stdout; the converters' own prints go to stderr) with ``CT-BUILDING name`` before each
variant, ``CT-BUILT {"variant", "path" | "error", "fatal", "seconds"}`` after it, and ``CT-DONE {"rss_mb"}``
once the model is done (it then waits for the next request) or ``CT-RETIRE`` when it exits to hand the rest
of the model to a fresh child.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from models.artifacts import cache_dir
from models.errors import UserError
from models.subject import resolve, Source
from export import memo

from benchmarks import variants
from benchmarks.child import _forget, die_with_parent, release_free_memory, rss_mb

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 3600  # per model, for every variant it still needs
BUILDING, BUILT, RETIRE, DONE = "CT-BUILDING ", "CT-BUILT ", "CT-RETIRE", "CT-DONE "
#: a child above this after a variant leaves the model's other variants to a fresh child (resnet50's 9 variants
#: in one child reached 9 GB: TensorFlow and the converters keep what they allocate)
CHILD_MAX_RSS_MB = 3000
#: an idle child keeping more than this after a model is stopped (a fresh one starts for the next model)
KEEP_IDLE_MB = 1500
#: on 2 cores building side by side (and training the next model meanwhile) was measured to gain nothing: the
#: cores were 94-99% busy already (a --quick sweep reached mlp, its 12th model, in 930 s serial, 965 s overlapped)
PARALLEL_MIN_CORES = 4
#: a model whose source file is bigger builds in one child (two children of resnet50 would need > 8 GB)
PARALLEL_MAX_SOURCE_MB = 60


@dataclass
class Built:
    """A variant's artifact, or why there is none (``fatal``: the sweep must stop, e.g. a full disk)."""

    path: Path | None = None
    error: str | None = None
    fatal: bool = False
    seconds: float = 0.0  # wall time the child spent on this variant (where a sweep's build time goes)


def child_command() -> list[str]:
    return [sys.executable, "-m", "benchmarks.build"]


def build_all(request: dict, on_step=lambda text: None, timeout: float = BUILD_TIMEOUT_S) -> dict[str, Built]:
    """One model's variants in a build child of its own (for callers that build once: ``benchmarks profile``)."""
    builder = Builder()
    try:
        return builder.build(request, on_step, timeout)
    finally:
        builder.close()


class BuildPool:
    """Build children side by side where the host has cores to spare (PARALLEL_MIN_CORES): a model's independent
    chains (the pruned model and its exports; the fp32 model's exports) build at once. Builds need no quiet
    machine, only measurements do, and the converters run on one core. A big model builds in one child: two would
    exceed the memory budget."""

    def __init__(self, size: int | None = None):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.builders = [Builder() for _ in range(size or (2 if cores >= PARALLEL_MIN_CORES else 1))]

    @property
    def parallel(self) -> bool:
        """Whether builds overlap other work (a second chain, the next model's training)."""
        return len(self.builders) > 1

    @property
    def started(self) -> int:
        return sum(b.started for b in self.builders)

    def build(self, request: dict, chains: list[list[str]], on_step=lambda text: None, source_mb: float = 0.0,
              timeout: float = BUILD_TIMEOUT_S) -> dict[str, Built]:
        """``request["variants"]`` grouped in ``chains`` that do not depend on each other."""
        chains = [c for c in chains if c]
        if len(chains) < 2 or len(self.builders) < 2 or source_mb > PARALLEL_MAX_SOURCE_MB:
            return self.builders[0].build(request, on_step, timeout)
        first, rest = chains[0], [v for c in chains[1:] for v in c]
        side_builder = self.builders[1]
        side_builder.ensure_started()  # from this thread, not the pool's (see ensure_started)
        with ThreadPoolExecutor(1) as pool:
            side = pool.submit(side_builder.build, {**request, "variants": rest}, on_step, timeout)
            try:
                made = self.builders[0].build({**request, "variants": first}, on_step, timeout)
            except BaseException:
                side_builder.kill()  # its thread then sees the child gone and returns
                raise
            made.update(side.result())
        return made

    def ensure_started(self) -> None:
        """Start the children from the calling thread (their parent-death signal follows the thread that started
        them: a worker thread's children would die with it)."""
        for b in self.builders:
            b.ensure_started()

    def kill(self) -> None:
        for b in self.builders:
            b.kill()

    def close(self) -> None:
        for b in self.builders:
            b.close()


class Builder:
    """A build child kept from one model to the next, so TensorFlow's import and start-up (~7 s on 2 cores) are
    paid once per sweep rather than once per model. Memory stays bounded: the child hands the rest of a model to a
    fresh child when a variant leaves it above CHILD_MAX_RSS_MB, and is stopped after a model when it keeps more
    than KEEP_IDLE_MB (it would sit on that while the model is measured)."""

    def __init__(self, keep_idle_mb: float = None):
        self.keep_idle_mb = KEEP_IDLE_MB if keep_idle_mb is None else keep_idle_mb
        self._proc = None
        self._stderr = None
        self.started = 0  # children started (tests: one for a whole sweep of small models)
        self.idle_rss_mb = None  # what the child kept after its last model
        self.stopped = False

    def build(self, request: dict, on_step=lambda text: None, timeout: float = BUILD_TIMEOUT_S) -> dict[str, Built]:
        """Build ``request["variants"]`` of ``request["model"]``: a child that dies costs the variant it was
        building (its reason says how it died) and a fresh child takes the rest."""
        remaining = list(request["variants"])
        results: dict[str, Built] = {}
        while remaining:
            if self.stopped:  # killed (Ctrl-C, a dying sweep): no fresh child for the rest
                raise KeyboardInterrupt
            current, code, retired = self._request({**request, "variants": remaining}, results, on_step, timeout)
            remaining = [v for v in remaining if v not in results]
            if code == -signal.SIGINT:  # Ctrl-C reached the child first: the sweep is interrupted, nothing failed
                raise KeyboardInterrupt
            if not remaining or retired:  # retired: it grew too big and left the rest to a fresh child
                continue
            tail = self._stderr_tail()
            self._discard()
            how = (f"the build process crashed (signal {-code})" if code is not None and code < 0 else
                   f"timed out after {timeout:.0f} s" if code is None else
                   f"the build process exited with code {code}" + (f": {tail}" if tail else ""))
            if current in remaining:
                results[current] = Built(error=f"building {current}: {how}")
                remaining.remove(current)
            else:  # died before starting a variant: nothing would go differently in a fresh child
                for name in remaining:
                    results[name] = Built(error=f"building {name}: {how}")
                remaining = []
        return results

    def ensure_started(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self._discard()
            self._start()

    def _start(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, text=True, cwd=ROOT)
        self.started += 1

    def _request(self, request, results, on_step, timeout) -> tuple[str | None, int | None, bool]:
        """(variant being built when the child stopped answering, its exit code or None if killed for taking too
        long, whether it retired); the code is 0 while the child stays for the next model."""
        self.ensure_started()
        proc, killed = self._proc, threading.Event()

        def kill():
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        current, retired, done = None, False, None
        try:
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # it died on its way here: its exit code says how
            for line in proc.stdout:
                if line.startswith(BUILDING):
                    current = line[len(BUILDING):].strip()
                    on_step(f"{request['model']} / building {current}")
                elif line.startswith(BUILT):
                    answer = json.loads(line[len(BUILT):])
                    results[answer["variant"]] = Built(Path(answer["path"]) if answer.get("path") else None,
                                                       answer.get("error"), bool(answer.get("fatal")),
                                                       float(answer.get("seconds", 0.0)))
                elif line.startswith(RETIRE):
                    retired = True
                elif line.startswith(DONE):
                    done = json.loads(line[len(DONE):])
                    break
            if done is None:
                code = proc.wait()
            else:
                code, self.idle_rss_mb = 0, done.get("rss_mb")
                if (self.idle_rss_mb or 0) > self.keep_idle_mb:
                    self.close()
        except BaseException:
            self._discard()
            raise
        finally:
            timer.cancel()
        return current, None if killed.is_set() else code, retired

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 8192))
        lines = [ln for ln in self._stderr.read().decode("utf-8", errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip()[:300] if lines else ""

    def _discard(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()
        if self._stderr is not None:
            self._stderr.close()
        self._proc = self._stderr = None

    def kill(self) -> None:
        """Stop the child now, and build nothing more (the sweep is being interrupted)."""
        self.stopped = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def close(self) -> None:
        """Let the child exit (end of its input), or stop it."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._discard()


def main() -> int:
    die_with_parent()
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # converters printing to fd 1 must not mix with the answers
    sys.stdout = sys.stderr
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            outcome = _serve(json.loads(line), channel)
            if outcome == "fatal":
                return 1
            if outcome == "retire":
                channel.write(RETIRE + "\n")
                return 0
            _forget_model()
            _forget()
            channel.write(DONE + json.dumps({"rss_mb": rss_mb()}) + "\n")
    except KeyboardInterrupt:
        return 130
    return 0


def _serve(request: dict, channel) -> str | None:
    """Build one model's variants, answering after each; "fatal" (stop), "retire" (grown past
    CHILD_MAX_RSS_MB with variants left) or None."""
    try:
        trained = resolve(Source(**request["source"]))  # the same subject the sweep made: zoo name or file
    except UserError as e:
        for name in request["variants"]:
            channel.write(BUILT + json.dumps({"variant": name, "error": str(e), "fatal": True}) + "\n")
        return "fatal"
    work = cache_dir(request.get("cache")) / "variants" / request["key"]
    for i, name in enumerate(request["variants"]):
        channel.write(BUILDING + name + "\n")
        answer, start = {"variant": name}, time.perf_counter()
        try:
            answer["path"] = str(variants.build(variants.by_name(name), trained, work))
        except variants.VariantUnavailable as e:
            answer["error"] = str(e)
        except UserError as e:  # e.g. the cache cannot be written (disk full): the sweep stops with this line
            answer.update(error=str(e), fatal=True)
        except Exception as e:  # a step of the chain that breaks (e.g. pruning): one failed variant
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            answer["error"] = f"building {name}: {type(e).__name__}: {first[:300]}"
        answer["seconds"] = round(time.perf_counter() - start, 2)
        channel.write(BUILT + json.dumps(answer) + "\n")
        if answer.get("fatal"):
            return "fatal"
        release_free_memory()
        if i + 1 < len(request["variants"]) and (rss_mb() or 0) > CHILD_MAX_RSS_MB:
            return "retire"
    return None


def _forget_model() -> None:
    """Between models: nothing of the last one (its loaded sources, memoized outputs, data) may stay."""
    from models.training import forget_splits  # deferred: models.training loads TensorFlow

    variants.forget_sources()
    memo.forget_all()
    forget_splits()


if __name__ == "__main__":
    raise SystemExit(main())
