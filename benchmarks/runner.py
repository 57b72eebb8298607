"""Timing method: inputs prepared outside the timed region, warm-up by time and count, then timed runs
until a minimum count is reached and either a minimum time has passed or the median is already known to within
``ci`` (in the spirit of TFLite's benchmark_model; the adaptive stop spares steady fast calls most of min_s)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from models.spec import n_samples, take


@dataclass(frozen=True)
class Method:
    warmup_s: float = 0.5  # at most (see warmup_settle)
    warmup_runs: int = 10
    min_s: float = 0.5
    min_runs: int = 20
    max_s: float = 10.0  # stop a very slow model even if min_runs is not reached (after >= 3 samples)
    ci: float | None = 0.02  # stop before min_s once the median's 95% CI half-width is within this fraction of it
    ci_min_s: float = 0.25  # ... but not before this: a short window would miss drift the CI cannot see
    ci_min_runs: int = 10  # ... nor before this many samples (below min_runs: slow, steady calls stop sooner)
    # warm-up ends before warmup_s once two successive windows (>= warmup_runs calls and WARMUP_WINDOW_S each)
    # have medians within this fraction of each other, but not before warmup_min_s
    warmup_settle: float | None = 0.05
    warmup_min_s: float = 0.1

    @classmethod
    def quick(cls) -> "Method":
        return cls(warmup_s=0.1, warmup_runs=3, min_s=0.25, min_runs=15, max_s=5.0, ci_min_s=0.1)


@dataclass
class LatencyStats:
    """Milliseconds per call."""

    runs: int
    min: float
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    max: float
    first: float | None = None  # the first call after loading, timed apart from warm-up
    calls_per_sample: int = 1  # >1 for calls under GROUP_MIN_MS: each sample is the mean of that many calls
    p50_ci: float | None = None  # half-width of the median's 95% confidence interval, as a fraction of the median

    def as_dict(self) -> dict:
        return asdict(self)


def stats(samples_ms) -> LatencyStats:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(int(a.size), float(a.min()), float(a.mean()), float(a.std()), float(p50), float(p90),
                        float(p99), float(a.max()), p50_ci=median_ci(a))


def median_ci(samples_ms) -> float:
    """Half-width of the median's distribution-free 95% confidence interval (order statistics n/2 ± 1.96·√n/2),
    as a fraction of the median: no assumption about the shape of latency distributions."""
    a = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = a.size
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    median = float(np.median(a))
    return float((a[hi] - a[lo]) / 2 / median) if median > 0 else float("inf")


CI_CHECK_EVERY = 10  # samples between checks of the median's CI (a sort; outside the timed region)


GROUP_MIN_MS = 0.05  # a timed sample spans >= 50 µs: its clock reads and bookkeeping (~0.2 µs) stay well under 1%


def group_size(mean_ms: float) -> int:
    """Calls per timed sample: 1, unless one call is too short for a clock read not to weigh on it."""
    return max(1, math.ceil(GROUP_MIN_MS / max(mean_ms, 1e-6)))


def _timed(call, group: int, clock) -> float:
    """Seconds taken by ``group`` back-to-back calls, between one pair of clock reads."""
    if group == 1:
        t = clock()
        call()
        return clock() - t
    t = clock()
    for _ in range(group):
        call()
    return clock() - t


WARMUP_WINDOW_S = 0.025
SLOW_WARMUP_RUNS = 2


def _warm_up(call, method: Method, clock) -> tuple[int, float]:
    """Call until warm: for ``warmup_s`` (at least SLOW_WARMUP_RUNS calls: a 1 s call is not run ten times to
    warm up) or, sooner, once the per-call time has settled (successive windows of ``warmup_runs`` calls agree
    within ``warmup_settle``). Returns calls made and seconds spent."""
    start, n, window, previous = clock(), 0, [], None
    while True:
        t = clock()
        call()
        now = clock()
        n += 1
        window.append(now - t)
        elapsed = now - start
        if n >= min(method.warmup_runs, SLOW_WARMUP_RUNS) and elapsed >= min(method.warmup_s, method.max_s):
            return n, elapsed
        if (method.warmup_settle is None or n < method.warmup_runs or len(window) < method.warmup_runs
                or sum(window) < WARMUP_WINDOW_S):
            continue
        median = float(np.median(window))
        if previous is not None and elapsed >= method.warmup_min_s and abs(median - previous) <= \
                method.warmup_settle * previous:
            return n, elapsed
        previous, window = median, []


def measure(call, method: Method = Method(), clock=time.perf_counter) -> LatencyStats:
    """Time ``call()`` (which must block until the result is ready).

    Calls shorter than GROUP_MIN_MS (as the warm-up shows) are timed in groups, as timeit does: a
    sample is then the mean of ``calls_per_sample`` back-to-back calls.
    """
    t0 = clock()
    call()
    first = (clock() - t0) * 1e3
    n, spent = _warm_up(call, method, clock)
    group = group_size(spent * 1e3 / n if n else first)
    samples = []
    start = clock()
    while len(samples) < method.min_runs or clock() - start < method.min_s:
        samples.append(_timed(call, group, clock) * 1e3 / group)
        if clock() - start > method.max_s and len(samples) >= 3:
            break
        if (method.ci is not None and len(samples) >= method.ci_min_runs and len(samples) % CI_CHECK_EVERY == 0
                and clock() - start >= method.ci_min_s and median_ci(samples) <= method.ci):
            break
    result = stats(samples)
    result.first = first
    result.calls_per_sample = group
    return result


def harness_overhead(call, rounds: int = 15, block: int = 200, group: int = 1, clock=time.perf_counter) -> float:
    """How much the harness's timing (one clock pair per ``group`` calls, as :func:`measure` does) adds over
    a bare loop of the same calls, as a fraction.

    Blocks of harness-timed calls and bare loops alternate, so drift in machine load hits both alike;
    the medians over rounds are compared.
    """
    block = max(group, block // group * group)
    harness, bare = [], []
    for _ in range(rounds):
        samples = []
        for _ in range(block // group):
            samples.append(_timed(call, group, clock))
        harness.append(sum(samples) / block)
        t = clock()
        for _ in range(block):
            call()
        bare.append((clock() - t) / block)
    return float(np.median(harness) / np.median(bare) - 1.0)


SELFCHECK_MAX_MS = 1.0  # slower calls dwarf a timer read (~0.1 µs: < 0.01 %); checking them costs time, tells nothing
SELFCHECK_BUDGET_MS = 300.0  # per check: 15 rounds of alternating blocks of ~10 ms each


def selfcheck_block(mean_ms: float, rounds: int = 15) -> int | None:
    """Calls per block for :func:`harness_overhead` within SELFCHECK_BUDGET_MS, or None to skip (slow calls)."""
    if mean_ms > SELFCHECK_MAX_MS:
        return None
    return max(20, int(SELFCHECK_BUDGET_MS / (2 * rounds * max(mean_ms, 1e-4))))


def batch_of(x, batch: int):
    """The first ``batch`` test inputs, tiled if the split is smaller (prepared outside the timed region)."""
    return take(x, np.arange(batch) % n_samples(x))
