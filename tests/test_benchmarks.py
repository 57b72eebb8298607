"""Benchmark method, store and report, on fakes with known timings, plus one real tiny sweep."""
import itertools

import pytest

from benchmarks import report
from benchmarks.runner import Method, measure, stats
from benchmarks.store import Store
from benchmarks.sweep import Sweep, SweepConfig


class FakeClock:
    """Each call to the measured function advances time by the next duration in ``durations`` (seconds)."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = itertools.cycle(durations)

    def __call__(self):
        return self.now

    def call(self):
        self.now += next(self.durations)


def test_stats_of_known_samples():
    s = stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.runs, s.min, s.max, s.p50) == (5, 1.0, 100.0, 3.0)
    assert s.mean == pytest.approx(22.0)
    assert s.p90 == pytest.approx(61.6)


def test_measure_runs_until_time_and_count_are_both_reached():
    clock = FakeClock([0.002])  # 2 ms per call
    method = Method(warmup_s=0.05, warmup_runs=3, min_s=0.2, min_runs=10, max_s=10)
    s = measure(clock.call, method, clock=clock)
    assert s.runs == 100  # 0.2 s / 2 ms: time is the binding limit, not the 10-run count
    assert s.p50 == pytest.approx(2.0) and s.std == pytest.approx(0.0, abs=1e-9)
    assert s.first == pytest.approx(2.0)

    clock = FakeClock([0.05])  # slow: the count is binding
    s = measure(clock.call, Method(warmup_s=0, warmup_runs=1, min_s=0.01, min_runs=7, max_s=10), clock=clock)
    assert s.runs == 7 and s.p90 == pytest.approx(50.0)


def test_measure_percentiles_from_mixed_timings():
    clock = FakeClock([0.001] * 9 + [0.010])  # one slow call in ten
    s = measure(clock.call, Method(warmup_s=0, warmup_runs=0, min_s=0, min_runs=1000, max_s=100), clock=clock)
    assert s.p50 == pytest.approx(1.0) and s.max == pytest.approx(10.0)
    assert s.mean == pytest.approx(1.9, rel=0.01)


def _row(**kw):
    base = dict(key="k", model="m", model_key="m-1", variant="fp32", runtime="keras", provider="cpu", batch=1,
                threads=2, status="ok", reason=None, metric_name="accuracy", higher_is_better=1, metric=0.9, size=10,
                size_gzip=5, init_ms=1.0, first_ms=1.0, runs=50, min_ms=1.0, mean_ms=1.0, std_ms=0.1, p50_ms=1.0,
                p90_ms=1.1, p99_ms=1.2, max_ms=2.0, host="h", versions={"tf": "x"}, git_rev="abc", created="now")
    base.update(kw)
    return base


def test_store_round_trip_and_replace(tmp_path):
    store = Store(tmp_path / "r.db")
    store.put(_row())
    store.put(_row(key="k2", variant="onnx-fp32", runtime="onnxruntime-cpu"))
    store.put(_row(metric=0.95))  # same key: replaced, not duplicated
    rows = store.rows()
    assert len(rows) == 2 and store.has("k") and not store.has("nope")
    assert [r for r in rows if r["key"] == "k"][0]["metric"] == 0.95
    assert Store(tmp_path / "r.db").rows(["other"]) == []


def test_report_warns_when_quantized_is_slower(tmp_path):
    rows = [_row(key="a", variant="onnx-fp32", runtime="onnxruntime-cpu", p50_ms=1.0),
            _row(key="b", variant="onnx-int8", runtime="onnxruntime-cpu", p50_ms=2.0),
            _row(key="c", variant="tflite-fp32", runtime="litert", p50_ms=1.0),
            _row(key="d", variant="tflite-int8", runtime="litert", p50_ms=0.5)]
    warnings = report.slower_quantized(rows)
    assert warnings == ["m: onnx-int8 is slower than onnx-fp32 on onnxruntime-cpu (p50 2.000 ms vs 1.000 ms, batch 1)"]
    paths = report.write(rows, tmp_path)
    text = paths[0].read_text()
    assert "WARNING: m: onnx-int8 is slower" in text and "| onnx-int8 | onnxruntime-cpu |" in text


def test_sweep_resumes_from_completed_rows(tmp_path):
    cfg = SweepConfig(models=["mlp"], variants=["fp32", "tflite-fp32"], method=Method.quick(), tiny=True,
                      out=tmp_path)
    store = Store(tmp_path / "results.db")
    assert Sweep(cfg, store).run() == 2
    rows = store.rows()
    assert {(r["variant"], r["runtime"], r["status"]) for r in rows} == {("fp32", "keras", "ok"),
                                                                         ("tflite-fp32", "litert", "ok")}
    assert all(r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and r["runs"] >= 15 for r in rows)
    assert Sweep(cfg, store).run() == 0  # nothing left to measure
    assert len(store.rows()) == 2
