"""Build a model's missing variants in a child process (``python -m benchmarks.build``).

Converters and fine-tuning hold on to memory TensorFlow never gives back: built in the sweep's own process,
the whole zoo's variants peaked at 22.5 GB of resident memory. In a child per model the memory goes back at
exit, and a converter that crashes is one failed variant with the signal in its reason, not a dead sweep.

Protocol: the parent writes one JSON request on the child's stdin; the child answers on a private channel
(its original stdout; the converters' own prints go to stderr) with ``CT-BUILDING name`` before each
variant and ``CT-BUILT {"variant", "path" | "error", "fatal", "seconds"}`` after it.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 3600  # per model, for every variant it still needs
BUILDING, BUILT = "CT-BUILDING ", "CT-BUILT "


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
    """Build ``request["variants"]`` of ``request["model"]`` in child processes: a child that dies costs the
    variant it was building (its reason says how it died) and a fresh child takes the rest."""
    remaining = list(request["variants"])
    results: dict[str, Built] = {}
    while remaining:
        current, code, tail = _run_child({**request, "variants": remaining}, results, on_step, timeout)
        remaining = [v for v in remaining if v not in results]
        if code == -signal.SIGINT:  # Ctrl-C reached the child first: the sweep is interrupted, nothing failed
            raise KeyboardInterrupt
        if not remaining:
            break
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


def _run_child(request, results, on_step, timeout) -> tuple[str | None, int | None, str]:
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, cwd=ROOT)
        killed = threading.Event()

        def kill():
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        current = None
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.close()
            for line in proc.stdout:
                if line.startswith(BUILDING):
                    current = line[len(BUILDING):].strip()
                    on_step(f"{request['model']} / building {current}")
                elif line.startswith(BUILT):
                    answer = json.loads(line[len(BUILT):])
                    results[answer["variant"]] = Built(Path(answer["path"]) if answer.get("path") else None,
                                                       answer.get("error"), bool(answer.get("fatal")),
                                                       float(answer.get("seconds", 0.0)))
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        stderr.seek(0)
        lines = [ln for ln in stderr.read().decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return current, None if killed.is_set() else code, (lines[-1].strip()[:300] if lines else "")


def die_with_parent() -> None:
    """A sweep killed with SIGKILL cannot stop its children: have the kernel do it (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    die_with_parent()
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # converters printing to fd 1 must not mix with the answers
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.readline())

    from models.artifacts import cache_dir
    from models.errors import UserError
    from models.subject import Source, resolve

    from . import variants

    try:
        trained = resolve(Source(**request["source"]))  # the same subject the sweep made: zoo name or file
    except UserError as e:
        for name in request["variants"]:
            channel.write(BUILT + json.dumps({"variant": name, "error": str(e), "fatal": True}) + "\n")
        return 1
    work = cache_dir(request.get("cache")) / "variants" / request["key"]
    for name in request["variants"]:
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
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
