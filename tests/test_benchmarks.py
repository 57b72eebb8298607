"""Benchmark method, store and report, on fakes with known timings, plus one real tiny sweep."""
import itertools
import json
import sys

import pytest

from benchmarks.report import markdown as report
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
    method = Method(warmup_s=0.05, warmup_runs=3, min_s=0.2, min_runs=10, max_s=10, ci=None)
    s = measure(clock.call, method, clock=clock)
    assert s.runs == 100  # 0.2 s / 2 ms: time is the binding limit, not the 10-run count
    assert s.p50 == pytest.approx(2.0) and s.std == pytest.approx(0.0, abs=1e-9)
    assert s.first == pytest.approx(2.0)

    clock = FakeClock([0.05])  # slow: the count is binding
    s = measure(clock.call, Method(warmup_s=0, warmup_runs=1, min_s=0.01, min_runs=7, max_s=10), clock=clock)
    assert s.runs == 7 and s.p90 == pytest.approx(50.0)


def test_timed_loop_stops_early_once_the_median_is_known_within_ci():
    from benchmarks.runner import median_ci

    method = Method(warmup_s=0, warmup_runs=1, min_s=1.0, min_runs=20, max_s=10, ci=0.02, ci_min_s=0.0)
    clock = FakeClock([0.002])
    steady = measure(clock.call, method, clock=clock)
    # a steady call stops at ci_min_runs (10): not min_runs (20), nor min_s / 2 ms = 500 runs
    assert steady.runs == 10 and steady.p50_ci == pytest.approx(0.0, abs=1e-9)
    clock = FakeClock([0.001, 0.003, 0.002, 0.0015, 0.0025])  # ±50 % around a 2 ms median
    noisy = measure(clock.call, method, clock=clock)
    # the CI's ranks n/2 ± 0.98·√n first fall inside the 2 ms fifth of the samples at n = 120 (checked every 10)
    assert noisy.runs == 120 and noisy.p50 == pytest.approx(2.0)
    assert measure(clock.call, Method(warmup_s=0, warmup_runs=1, min_s=1.0, min_runs=20, max_s=10, ci=None),
                   clock=clock).runs >= 500  # without the adaptive stop: min_s decides (1 s / 2 ms)
    clock = FakeClock([0.002])
    floor = measure(clock.call, Method(warmup_s=0, warmup_runs=1, min_s=1.0, min_runs=20, max_s=10, ci=0.02,
                                       ci_min_s=0.1), clock=clock)
    assert floor.runs == 50  # converged at once, but timed for at least ci_min_s (0.1 s / 2 ms)
    assert median_ci([1.0] * 9 + [2.0]) == pytest.approx(0.5) and median_ci([1.0, 3.0] * 50) == pytest.approx(0.5)
    assert median_ci([1.0] * 30 + [1.01] * 40 + [3.0] * 30) == 0.0


def test_warm_up_ends_once_the_call_time_has_settled():
    cooling = [0.001 * (1 + 4 * 0.97 ** i) for i in range(400)] + [0.001] * 5000  # 5 ms calls settling to 1 ms
    method = Method(warmup_s=3.0, warmup_runs=10, min_s=0.05, min_runs=20, max_s=10, ci=None, warmup_min_s=0.1)
    clock = FakeClock(cooling)
    settled = measure(clock.call, method, clock=clock)
    assert settled.p50 == pytest.approx(1.0, rel=0.06)  # warm-up did not stop while calls were still speeding up
    assert clock.now < 1.0  # ... nor run on to warmup_s once they had settled
    clock = FakeClock(cooling)
    measure(clock.call, Method(**{**method.__dict__, "warmup_settle": None}), clock=clock)
    assert clock.now > 3.0  # without the settle rule: the whole warmup_s
    clock = FakeClock([0.002])  # steady at once: warm for warmup_min_s, not warmup_s
    measure(clock.call, method, clock=clock)
    assert 0.1 + 0.05 <= clock.now < 0.3


def test_slow_calls_warm_up_for_the_warm_up_time_not_ten_calls():
    clock = FakeClock([1.0])  # 1 s per call
    method = Method(warmup_s=0.5, warmup_runs=10, min_s=0.5, min_runs=20, max_s=10, ci=0.02, ci_min_s=0.25)
    s = measure(clock.call, method, clock=clock)
    assert s.runs == 10  # steady: the median is known at ci_min_runs
    assert clock.now == pytest.approx(1 + 2 + 10)  # first call, 2 warm-up calls, 10 timed


def test_calls_shorter_than_the_clock_can_resolve_are_timed_in_groups():
    from benchmarks.runner import harness_overhead

    clock = FakeClock([1e-6])  # 1 µs calls: a sample is the mean of 50 back-to-back calls
    s = measure(clock.call, Method(warmup_s=0, warmup_runs=10, min_s=0, min_runs=30, max_s=10), clock=clock)
    assert s.calls_per_sample == 50 and s.runs == 30 and s.p50 == pytest.approx(0.001)
    assert clock.now == pytest.approx(1e-6 * (1 + 2 + 50 * 30))  # first call, warm-up (2 calls), 30 groups of 50
    assert harness_overhead(clock.call, rounds=3, block=100, group=50, clock=clock) == pytest.approx(0.0)

    clock = FakeClock([0.001])  # 1 ms calls: one call per sample
    slow = measure(clock.call, Method(warmup_s=0, warmup_runs=3, min_s=0, min_runs=5), clock=clock)
    assert slow.calls_per_sample == 1


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
    assert len(warnings) == 1 and warnings[0].startswith(
        "m: onnx-int8 is slower than onnx-fp32 on onnxruntime-cpu at batch 1, 2 threads (p50 2.000 ms vs 1.000 ms)")
    paths = report.write(rows, tmp_path)
    text = paths[0].read_text()
    assert "### m" in text and "WARNING: onnx-int8 is slower" in text and "| onnx-int8 | onnxruntime-cpu |" in text


def _tiny_cfg(tmp_path, **kw):
    base = dict(models=["mlp"], variants=["fp32", "tflite-fp32"], runtimes=["keras", "litert"], batches=[1, 4],
                threads=[1], method=Method.quick(), tiny=True, out=tmp_path)
    base.update(kw)
    return SweepConfig(**base)


def test_sweep_measures_in_workers_and_resumes(tmp_path):
    store = Store(tmp_path / "results.db")
    sweep = Sweep(_tiny_cfg(tmp_path), store)
    assert sweep.run() == 4
    spent = sweep.phases.seconds["mlp"]  # where the time went, as `benchmarks run` prints it
    assert all(spent[p] > 0 for p in ("train", "build", "measure", "score")) and spent["score"] < spent["measure"]
    rows = store.rows()
    assert {(r["variant"], r["runtime"], r["batch"], r["status"]) for r in rows} == {
        ("fp32", "keras", 1, "ok"), ("fp32", "keras", 4, "ok"),
        ("tflite-fp32", "litert", 1, "ok"), ("tflite-fp32", "litert", 4, "ok")}
    for r in rows:
        assert r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and r["runs"] >= 15
        assert r["peak_rss_mb"] > 10 and r["init_ms"] > 0 and r["throughput"] > 0
        assert r["metric"] is not None and r["versions"] and r["host"]
    litert_b1 = [r for r in rows if r["runtime"] == "litert" and r["batch"] == 1][0]
    assert litert_b1["overhead"] is not None  # harness self-check against a bare loop
    assert Sweep(_tiny_cfg(tmp_path), store).run() == 0  # resumed: nothing left to measure
    assert len(store.rows()) == 4


def test_selfcheck_is_sized_to_a_budget_and_skipped_on_slow_calls():
    from benchmarks.runner import SELFCHECK_MAX_MS, selfcheck_block

    assert selfcheck_block(0.001) == 10000 and selfcheck_block(1.0) == 20 and selfcheck_block(0.1) == 100
    assert selfcheck_block(SELFCHECK_MAX_MS) == 20 and selfcheck_block(SELFCHECK_MAX_MS * 1.01) is None


class _FakeRuntime:
    """A runtime whose outputs are the inputs' row sums plus ``shift``; counts full-split scorings."""

    def __init__(self, name, shift=0.0):
        self.name, self.shift = name, shift

    def load(self, path, threads):
        import types

        return types.SimpleNamespace(predict=lambda x: x.sum(axis=1, keepdims=True) + self.shift)


def _fake_trained():
    import types

    import numpy as np

    from models.spec import Split, Splits

    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    calls = []

    def score(predict, split, config):
        calls.append(len(split.x))
        return float(np.mean(predict(split.x)))

    spec = types.SimpleNamespace(export_atol=1e-4, score=score, name="accuracy")
    return types.SimpleNamespace(spec=spec, config={}, metric=spec), Splits(Split(x, x), Split(x, x), Split(x, x)), calls


@pytest.mark.parametrize("shift, reused", [(0.0, True), (1e-6, True), (0.5, False)])
def test_quick_reuses_a_metric_only_when_outputs_agree(tmp_path, shift, reused):
    trained, splits, calls = _fake_trained()
    sweep = Sweep(_tiny_cfg(tmp_path, reuse_metric=True), Store(tmp_path / "r.db"))
    first, source = sweep._score(trained, _FakeRuntime("litert"), tmp_path / "m.tflite", splits)
    assert source is None and calls == [100]
    second, source = sweep._score(trained, _FakeRuntime("litert-noxnnpack", shift), tmp_path / "m.tflite", splits)
    if reused:
        assert second == first and calls == [100]
        assert source.startswith("litert: outputs agree on 32 test inputs (max |Δ|") and "≤ 1e-04" in source
    else:  # outputs drift beyond the model's tolerance: scored on its own
        assert source is None and calls == [100, 100] and second == pytest.approx(first + 0.5)


def test_full_sweep_never_reuses_a_metric(tmp_path):
    trained, splits, calls = _fake_trained()
    sweep = Sweep(_tiny_cfg(tmp_path), Store(tmp_path / "r.db"))
    for name in ("litert", "litert-noxnnpack"):
        assert sweep._score(trained, _FakeRuntime(name), tmp_path / "m.tflite", splits)[1] is None
    assert calls == [100, 100]


def test_a_file_is_not_scored_again_on_the_runtime_its_export_validation_used(tmp_path):
    trained, splits, calls = _fake_trained()
    import hashlib

    path = tmp_path / "m.tflite"
    path.write_bytes(b"model")
    record = {"metric_name": "accuracy", "metric_export": 0.25, "metric_n_samples": 100, "runtime": "litert",
              "file_sha256": hashlib.sha256(b"model").hexdigest()}
    (tmp_path / "m.tflite.json").write_text(json.dumps({"validation": record}))
    sweep = Sweep(_tiny_cfg(tmp_path), Store(tmp_path / "r.db"))
    metric, source = sweep._score(trained, _FakeRuntime("litert"), path, splits)
    assert metric == 0.25 and calls == [] and "export's own validation" in source and "100 samples" in source
    for other in ({"runtime": "onnxruntime-cpu"}, {"metric_name": "f1"}, {"metric_n_samples": 50},
                  {"file_sha256": hashlib.sha256(b"another model").hexdigest()}):
        (tmp_path / "m.tflite.json").write_text(json.dumps({"validation": {**record, **other}}))
        assert sweep._score(trained, _FakeRuntime("litert"), path, splits)[1] is None  # scored here
    assert calls == [100] * 4


def test_report_marks_a_reused_metric(tmp_path):
    rows = [_row(key="a", variant="tflite-fp32", runtime="litert"),
            _row(key="b", variant="tflite-fp32", runtime="litert-noxnnpack",
                 metric_from="litert: outputs agree on 32 test inputs (max |Δ| 0.0e+00 ≤ 1e-04)")]
    md, page = (p.read_text() for p in report.write(rows, tmp_path)[:2])
    assert "| tflite-fp32 | litert-noxnnpack | 1 | 2 | 0.9000 † |" in md
    assert "- tflite-fp32 on litert-noxnnpack: litert: outputs agree on 32 test inputs" in md
    assert "tflite-fp32 on litert-noxnnpack: litert: outputs agree" in page


def test_unavailable_gpu_runtime_is_a_row_with_a_reason(tmp_path):
    store = Store(tmp_path / "results.db")
    Sweep(_tiny_cfg(tmp_path, variants=["onnx-fp32"], runtimes=["onnxruntime-cuda"], batches=[1]), store).run()
    (row,) = store.rows()
    assert row["status"] == "unavailable" and "CUDAExecutionProvider" in row["reason"]


def test_run_says_which_onnxruntime_build_and_providers_it_found(cli, tmp_path):
    from importlib import metadata

    import onnxruntime

    from benchmarks.runtimes.onnxruntime import build_line, describe_build

    line = build_line()
    assert line == (f"ONNX Runtime: onnxruntime {metadata.version('onnxruntime')}, providers "
                    f"{', '.join(onnxruntime.get_available_providers())}")
    res = cli("benchmarks", "run", "--models", "mlp", "--tiny", "--variants", "onnx-fp32", "--runtimes",
              "onnxruntime-cuda", "--batch", "1", "--threads", "1", "--out", tmp_path)
    assert res.returncode == 0 and line in " ".join(res.stdout.split()), res.stdout
    assert "time: train " in res.stdout and "build " in res.stdout and "measure " in res.stdout, res.stdout
    phases = json.loads((tmp_path / "phases.json").read_text())
    assert set(phases["per_model_s"]["mlp"]) == {"train", "build", "measure", "score"}
    assert phases["build_per_variant_s"] == {}  # no runtime could run it: nothing was built
    # the measured broken install: onnxruntime-gpu's files over onnxruntime's, one module for both
    both = describe_build({"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}, ["CPUExecutionProvider"])
    assert both.startswith("ONNX Runtime: onnxruntime 1.32.0, onnxruntime-gpu 1.31.1 are installed over one")
    assert "`make gpu` installs the GPU builds in place of the CPU ones" in both
    gpu = describe_build({"onnxruntime-gpu": "1.23.0"}, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert gpu == "ONNX Runtime: onnxruntime-gpu 1.23.0, providers CUDAExecutionProvider, CPUExecutionProvider"
    assert describe_build({"onnxruntime": "1.32.0"}, None) == "ONNX Runtime: onnxruntime 1.32.0, cannot be imported"


def test_crashing_runtime_is_a_failed_row_not_a_dead_sweep(tmp_path, monkeypatch):
    from benchmarks.executors import local as executor

    monkeypatch.setattr(executor, "child_command", lambda: [sys.executable, "-c", "import os; os.abort()"])
    store = Store(tmp_path / "results.db")
    Sweep(_tiny_cfg(tmp_path, variants=["tflite-fp32"], runtimes=["litert"], batches=[1]), store).run()
    (row,) = store.rows()
    assert row["status"] == "failed" and row["reason"] == "runtime crashed (signal 6)"
    assert row["metric"] is not None  # the metric was computed before the worker died


def test_compare_flags_regressions_beyond_noise():
    from benchmarks.compare import compare

    old = [_row(key="a", p50_ms=1.0, p90_ms=1.02), _row(key="b", variant="onnx-fp32", p50_ms=1.0, p90_ms=1.5)]
    new = [_row(key="a", p50_ms=1.3, p90_ms=1.32), _row(key="b", variant="onnx-fp32", p50_ms=1.3, p90_ms=1.9)]
    changes = compare(old, new)
    # a: +30% with 4% spread is a regression; b: +30% with a 50%+ spread is noise
    assert [(c.key[1], c.kind) for c in changes] == [("fp32", "latency")]
    assert compare(old, [_row(key="a", metric=0.8)]) and compare(old, old) == []


def test_report_files_have_tables_and_plots(tmp_path):
    rows = [_row(key="a", variant="fp32", p50_ms=2.0, size=100),
            _row(key="b", variant="tflite-int8", runtime="litert", p50_ms=0.5, size=25, metric=0.89),
            _row(key="c", variant="tflite-fp32", runtime="litert", p50_ms=0.8, size=100, metric=0.88)]
    md, page, js = report.write(rows, tmp_path)
    assert "| tflite-int8 | litert |" in md.read_text()
    text = page.read_text()
    assert text.count('class="plotly-graph-div"') == 2 and "<table" in text  # Pareto and speedup figures
    from benchmarks.report.plots import pareto

    # tflite-fp32 is slower, larger and worse than tflite-int8: dominated
    assert pareto(rows, True) == {0, 1}
