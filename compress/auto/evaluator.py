"""How ``compress auto`` judges one candidate: the real exported file, on the real runtime, on the test split.

The metric is the task's own, computed on the runtime's predictions for the evaluation data that calibration
and fine-tuning never saw. The drop (fp32 Keras minus candidate, sign-flipped for lower-is-better metrics)
carries a paired bootstrap 95% interval: the same resampled test indices for fp32 and the candidate, so the
noise they share cancels. Latency is batch 1, 1 thread, timed by the benchmarks' harness in this process, in
SESSIONS sessions of the file: the median of their medians.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models import verdict as gate
from models.artifacts import sha256_file, sizes
from models.spec import n_samples
from benchmarks import runtimes
from benchmarks.runner import batch_of, measure, Method

RESAMPLES = gate.RESAMPLES
LEVEL = gate.LEVEL
#: sessions timed per file. One ONNX Runtime session of the same file can run ~60% slower than the next, for its
#: whole life (transformer fp32, 1 thread, AVX-512 host: 0.175 ms in 8 of 10 sessions, 0.28 ms in 2), so one
#: session can flip a choice or invent a speedup; the median of 3 is off only when 2 of 3 are.
SESSIONS = 3
#: the fastest candidates inside the budget that are timed again side by side at the end (with fp32), and how often
FINALISTS = 4
ROUNDS = 3


@dataclass
class Reference:
    """The fp32 Keras model's score, and what the bootstrap needs to compare a candidate with it."""

    metric_name: str
    higher_is_better: bool
    value: float
    n: int
    #: the resample indices (resamples x n), shared by every candidate: the pairing
    indices: np.ndarray | None = None
    #: the fp32 metric on each resample
    boot: np.ndarray | None = None
    #: why no interval can be computed (a custom score_fn), else None
    no_ci: str | None = None


@dataclass
class Score:
    metric: float
    drop: float
    ci_low: float | None
    ci_high: float | None
    ci_note: str | None
    size: int
    size_gzip: int
    p50_ms: float
    p50_ci: float | None
    runs: int
    init_ms: float
    sha256: str

    def as_dict(self) -> dict:
        return asdict(self)


def reference(subject, resamples: int = RESAMPLES, seed: int = 0) -> Reference:
    """Score the fp32 Keras model and, when the metric is one of per-sample pairs, draw the resamples."""
    from models.training import keras_predict  # deferred: models.training loads TensorFlow

    spec, test = subject.spec, subject.splits.test
    metric = subject.metric
    n = n_samples(test.x)
    if spec.score_fn is not None:
        return Reference(metric.name, metric.higher_is_better, float(subject.score(subject.model)), n,
                         no_ci=f"{subject.name} is scored by its own score_fn ({spec.task}), not by a metric of "
                               "per-sample (label, prediction) pairs, so its test samples cannot be resampled")
    pred = keras_predict(subject.model)(test.x)
    value = metric(test.y, pred)
    indices = gate.resample_indices(n, resamples, seed)
    return Reference(metric.name, metric.higher_is_better, float(value), n, indices,
                     gate.resampled(metric, test.y, pred, indices))


def drop_of(ref: Reference, value: float) -> float:
    """How much worse ``value`` is than the fp32 metric, in the metric's units (negative: better)."""
    return gate.drop_of(ref.value, value, ref.higher_is_better)


def paired_interval(ref: Reference, metric, y, pred, level: float = LEVEL):
    """(low, high, note) of the drop's percentile interval over the shared resamples (models.verdict's paired
    bootstrap); note says why when None."""
    if ref.no_ci:
        return None, None, ref.no_ci
    return gate.interval(ref.boot, gate.resampled(metric, y, pred, ref.indices), ref.higher_is_better, level)


def latency(loaded, x, method=None):
    """Batch-1 latency of a loaded runtime model with the benchmarks' harness (inputs prepared outside the
    timed region)."""
    return measure(loaded.bind(batch_of(x, 1)), method or Method.quick())


def score_file(subject, ref: Reference, path: Path, runtime: str, method=None) -> Score:
    """Load ``path`` on ``runtime`` with 1 thread, score it on the test split, bootstrap the drop, time it."""
    loaded = runtimes.by_name(runtime).load(path, 1)
    test = subject.splits.test
    if ref.no_ci:
        value = float(subject.score_predict(loaded.predict))
        low = high = None
        note = ref.no_ci
    else:
        pred = loaded.predict(test.x)
        value = float(subject.metric(test.y, pred))
        low, high, note = paired_interval(ref, subject.metric, test.y, pred)
    init_ms = loaded.init_ms
    timed = [latency(loaded, test.x, method)]
    for _ in range(SESSIONS - 1):
        del loaded  # one session at a time, as an app has
        loaded = runtimes.by_name(runtime).load(path, 1)
        timed.append(latency(loaded, test.x, method))
    stats = sorted(timed, key=lambda t: t.p50)[len(timed) // 2]
    raw, gz = sizes(path)
    return Score(value, drop_of(ref, value), low, high, note, raw, gz, stats.p50, stats.p50_ci,
                 sum(t.runs for t in timed), init_ms, sha256_file(path))


def interleaved_p50s(files: dict, runtime: str, x, rounds: int = ROUNDS, method=None) -> dict[str, list[float]]:
    """Batch-1, 1-thread p50 of each file in ``rounds`` rounds, one fresh session per file per round, the order
    rotated each round: files timed side by side see the same host state (see _Search.retime_finalists)."""
    keys = list(files)
    out = {k: [] for k in keys}
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            loaded = runtimes.by_name(runtime).load(files[k], 1)
            out[k].append(latency(loaded, x, method).p50)
            del loaded
    return out
