"""Which ONNX Runtime int8 flavour to use: the fastest one that keeps the outputs, measured once per host and
model family, and cached.

ONNX Runtime's x86 int8 kernels depend on the flavour: signed activations (S8S8) take a slow path on CPUs
without AVX-VNNI-INT8, unsigned activations (U8S8) use VNNI but can saturate int16 intermediates on CPUs
without it (hence ``reduce_range`` there), and QOperator vs QDQ changes which fused kernels run. No fixed
recipe is right for every model and CPU, so the choice is measured: every candidate is quantized, checked
against fp32 on the calibration inputs, and timed at batch 1 on one thread in interleaved rounds.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from models.artifacts import atomic_write, cache_dir

#: name -> (quant format, activation type); weights are int8 in every flavour
FLAVOURS = {"qdq-s8s8": ("QDQ", "int8"), "qdq-u8s8": ("QDQ", "uint8"),
            "qop-s8s8": ("QOperator", "int8"), "qop-u8s8": ("QOperator", "uint8")}
AUTO = "auto"
CHOICES = (AUTO,) + tuple(FLAVOURS)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8")
#: a candidate is accurate if its error vs fp32 is within FACTOR x the best candidate's error, or SLACK above it
ACCURACY_FACTOR = 2.0
ACCURACY_SLACK = 0.02
N_CHECK = 16  # calibration inputs compared with fp32
ROUNDS = 9
MIN_ROUNDS = 3
BUDGET_S = 0.4  # timing per candidate, all rounds together
VERSION = 1  # bump when the measurement changes: older cached choices are then measured again


@dataclass(frozen=True)
class Flavour:
    name: str
    quant_format: str  # "QDQ" | "QOperator"
    activation: str  # "int8" | "uint8"
    reduce_range: bool  # 7-bit weights: U8S8 on an x86 CPU without VNNI

    def __str__(self) -> str:
        return self.name + (" (reduce_range)" if self.reduce_range else "")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_description() -> dict:
    """What the choice depends on: the CPU (and its int8 dot-product instructions) and the runtime version."""
    import onnxruntime as ort  # deferred: ONNX Runtime

    flags = _cpu_flags()
    machine = platform.machine().lower()
    return {"cpu": _cpu_name(), "machine": machine, "x86": machine in ("x86_64", "amd64", "i686", "x86"),
            "vnni": bool(flags & set(VNNI_FLAGS)), "int8_flags": sorted(flags & set(VNNI_FLAGS + ("avx512f", "avx2"))),
            "cores": os.cpu_count(), "onnxruntime": ort.__version__}


def _digest(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=8).hexdigest()


def flavour(name: str, host: dict | None = None) -> Flavour:
    """The flavour ``name`` as it is built on ``host`` (this one by default)."""
    if name not in FLAVOURS:
        raise ValueError(f"unknown ONNX int8 flavour {name!r}; valid: {', '.join(CHOICES)}")
    host = host or host_description()
    fmt, activation = FLAVOURS[name]
    return Flavour(name, fmt, activation, activation == "uint8" and host["x86"] and not host["vnni"])


def family(fp32: bytes) -> str:
    """A model family: the set of op types of the fp32 ONNX graph (with their domains), hashed."""
    import onnx  # deferred: onnx

    graph = onnx.load_from_string(fp32).graph
    return _digest(sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in graph.node}))


def choice_path(cache: Path, host: dict, model_family: str) -> Path:
    return Path(cache) / "onnx-int8-choice" / f"{_digest(host)}-{model_family}.json"


@dataclass
class Candidate:
    name: str
    ms: float | None = None  # median batch-1 latency, 1 thread
    error: float | None = None  # relative RMS error vs fp32 (worst output)
    rejected: str | None = None


@dataclass
class Choice:
    flavour: str
    reason: str
    path: Path
    cached: bool
    host: dict
    family: str
    fp32_ms: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    #: bytes of the candidates built in this process (not cached): the caller reuses the chosen one
    built: dict = field(default_factory=dict, repr=False)

    def note(self) -> str:
        how = "cached choice for this host and model family" if self.cached else "measured on this host"
        return f"onnx int8 flavour: {self.flavour} ({how}: {self.reason}; {self.path})"

    def to_json(self) -> dict:
        return {"version": VERSION, "flavour": self.flavour, "reason": self.reason, "host": self.host,
                "family": self.family, "fp32_ms": self.fp32_ms, "candidates": [asdict(c) for c in self.candidates],
                "method": f"batch 1, 1 thread, {MIN_ROUNDS}-{ROUNDS} interleaved rounds (~{BUDGET_S:g} s per "
                          f"candidate), median; accuracy on {N_CHECK} calibration inputs (relative RMS vs fp32, "
                          f"accepted within {ACCURACY_FACTOR:g}x or +{ACCURACY_SLACK:g} of the best)"}


def _load(path: Path, host: dict, model_family: str) -> Choice | None:
    try:
        data = json.loads(path.read_text())
        if data.get("version") != VERSION or data["flavour"] not in FLAVOURS or data["host"] != host:
            return None
        return Choice(data["flavour"], data["reason"], path, True, host, model_family, data.get("fp32_ms"),
                      [Candidate(**c) for c in data.get("candidates", [])])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or unreadable: measure again


_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
           "tensor(bool)": np.bool_}


def _session(data: bytes):
    import onnxruntime as ort  # deferred: ONNX Runtime

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _typed(session, feed: dict) -> dict:
    types = {i.name: _DTYPES.get(i.type) for i in session.get_inputs()}
    return {k: np.asarray(v, dtype=types.get(k) or np.asarray(v).dtype) for k, v in feed.items()}


def _outputs(session, feeds: list[dict]) -> list[np.ndarray]:
    """Every output over all feeds, concatenated along the first axis, as float64."""
    runs = [session.run(None, _typed(session, f)) for f in feeds]
    return [np.concatenate([np.asarray(r[j], dtype=np.float64).reshape(len(r[j]) if np.ndim(r[j]) else 1, -1)
                            for r in runs]) for j in range(len(runs[0]))]


def _error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """Relative RMS error of the worst output (inf if any value is not finite)."""
    worst = 0.0
    for ref, got in zip(reference, candidate):
        if not np.all(np.isfinite(got)):
            return float("inf")
        scale = float(np.sqrt(np.mean(ref ** 2))) or 1.0
        worst = max(worst, float(np.sqrt(np.mean((got - ref) ** 2))) / scale)
    return worst


def time_sessions(sessions: dict, feed: dict, budget_s: float = BUDGET_S, rounds: int = ROUNDS) -> dict[str, float]:
    """Median ms per call of each session, batch 1, in interleaved rounds (noise from other processes then falls
    on every session alike). Each session gets about ``budget_s``: up to ``rounds`` rounds of k back-to-back
    calls, and at least MIN_ROUNDS single calls when one call is slower than that (it drops out of later rounds)."""
    feeds = {name: _typed(s, feed) for name, s in sessions.items()}
    calls, wanted = {}, {}
    for name, s in sessions.items():
        s.run(None, feeds[name])  # warm-up (first-call allocations)
        start = time.perf_counter()
        s.run(None, feeds[name])
        single = max(time.perf_counter() - start, 1e-6)
        calls[name] = max(1, int(budget_s / rounds / single))
        wanted[name] = min(rounds, max(MIN_ROUNDS, int(budget_s / single)))
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for r in range(max(wanted.values())):
        for name, s in sessions.items():
            if r >= wanted[name]:
                continue
            start = time.perf_counter()
            for _ in range(calls[name]):
                s.run(None, feeds[name])
            samples[name].append((time.perf_counter() - start) / calls[name] * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def measure(fp32: bytes, build: Callable[[Flavour], bytes], feeds: list[dict], host: dict,
            names=tuple(FLAVOURS)) -> tuple[str, str, float, list[Candidate], dict]:
    """Build, check and time every candidate; returns (chosen name, reason, fp32 ms, candidates, built bytes)."""
    feeds = feeds[:N_CHECK]
    reference_session = _session(fp32)
    reference = _outputs(reference_session, feeds)
    candidates, sessions, built = [], {}, {}
    for name in names:
        c = Candidate(name)
        candidates.append(c)
        try:
            built[name] = build(flavour(name, host))
        except Exception as e:
            c.rejected = f"cannot be built: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}"
            continue
        try:
            sessions[name] = _session(built[name])
            c.error = _error(reference, _outputs(sessions[name], feeds))
        except Exception as e:
            c.rejected = f"ONNX Runtime cannot run it: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}"
            sessions.pop(name, None)
    if not sessions:
        raise ValueError("no ONNX int8 flavour could be built and run: " +
                         "; ".join(f"{c.name} {c.rejected}" for c in candidates))
    timings = time_sessions({"fp32": reference_session, **sessions}, feeds[0])
    fp32_ms = timings.pop("fp32")
    best_error = min(c.error for c in candidates if c.name in sessions)
    limit = max(best_error * ACCURACY_FACTOR, best_error + ACCURACY_SLACK)
    for c in candidates:
        if c.name not in sessions:
            continue
        c.ms = timings[c.name]
        if not c.error <= limit:  # also catches inf/nan
            c.rejected = (f"outputs drift from fp32 (relative RMS error {c.error:.3g}, the best flavour has "
                          f"{best_error:.3g}; accepted up to {limit:.3g})"
                          + (": uint8 activations can saturate" if FLAVOURS[c.name][1] == "uint8" else ""))
    accepted = sorted((c for c in candidates if c.rejected is None), key=lambda c: c.ms)
    best = accepted[0]
    others = ", ".join(f"{c.name} {c.ms:.3g} ms" for c in accepted[1:])
    reason = (f"fastest accurate flavour at batch 1, 1 thread: {best.ms:.3g} ms vs fp32 {fp32_ms:.3g} ms "
              f"({fp32_ms / best.ms:.2f}x)" + (f"; {others}" if others else "")
              + f"; relative RMS error vs fp32 {best.error:.3g} (accurate: within {limit:.3g}, from the best "
                f"flavour's {best_error:.3g}; the task metric is checked on the file itself)"
              + ("; every int8 flavour is slower than fp32 here (the model is too small or its ops are not "
                 "int8 kernels: dequantize/requantize overhead dominates)" if best.ms > fp32_ms else "")
              + "".join(f"; rejected {c.name}: {c.rejected}" for c in candidates if c.rejected))
    return best.name, reason, fp32_ms, candidates, built


def choose(fp32: bytes, build: Callable[[Flavour], bytes], feeds: list[dict], cache: Path | None = None) -> Choice:
    """The flavour for this host and ``fp32``'s family: read from the cache, else measured and cached.

    ``build(flavour)`` returns the quantized bytes of one candidate; ``feeds`` are calibration inputs (dicts
    of batch-1 arrays by input name), the first of which is also the timing input.
    """
    host = host_description()
    model_family = family(fp32)
    path = choice_path(cache_dir(cache), host, model_family)
    cached = _load(path, host, model_family)
    if cached is not None:
        return cached
    if not feeds:
        raise ValueError("choosing the ONNX int8 flavour needs calibration inputs")
    name, reason, fp32_ms, candidates, built = measure(fp32, build, feeds, host)
    choice = Choice(name, reason, path, False, host, model_family, fp32_ms, candidates, built)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(choice.to_json(), indent=2, sort_keys=True) + "\n")
    return choice
