"""The all-zoo auto table and its comparison with the sweep's fixed variants (ratios from each run's own fp32)."""
from test_benchmarks import _row

from benchmarks.store import Store
from compress.auto import zoo as auto_zoo


def _result(model, chosen_chain, latency_ratio, drop=0.004, exclude=(), size_ratio=3.9):
    fp32 = {"key": "a", "chain": ["train", "tflite(fp32)"], "drop": 0.0, "ci_low": 0.0, "ci_high": 0.0,
            "recipe": {"exclude": []}}
    best = {"key": "b", "chain": chosen_chain, "drop": drop, "ci_low": -0.002, "ci_high": 0.009,
            "recipe": {"exclude": list(exclude)}}
    return {"model": model, "search_seconds": 12.0, "candidates": [fp32, best],
            "choices": {"litert": {"chosen_key": "b", "size_ratio": size_ratio, "latency_ratio": latency_ratio,
                                   "reachable": True}}}


def test_table_names_recipe_ratios_drop_and_compares_speedups_with_the_sweep(tmp_path):
    store = Store(tmp_path / "results.db")
    for model in ("a", "b", "c"):  # the sweep: tflite-int8 is 3x faster and 4x smaller than tflite-fp32, -0.5 point
        store.put(_row(key=f"{model}0", model=model, variant="fp32", runtime="keras", metric=0.90, threads=1))
        store.put(_row(key=f"{model}1", model=model, variant="tflite-fp32", runtime="litert", p50_ms=0.3,
                       p90_ms=0.31, metric=0.90, threads=1, size=400))
        store.put(_row(key=f"{model}2", model=model, variant="tflite-int8", runtime="litert", p50_ms=0.1,
                       p90_ms=0.11, metric=0.895, threads=1, size=100))
        store.put(_row(key=f"{model}3", model=model, variant="tflite-int8", runtime="litert", p50_ms=0.01,
                       p90_ms=0.011, metric=0.895, threads=2))  # another thread count: not compared
    lines = auto_zoo.lines_of(_result("a", ["train", "channels(0.5)", "tflite(int8)"], 6.0, exclude=["conv2d"]))
    lines += auto_zoo.lines_of(_result("b", ["train", "tflite(dynamic)"], 2.0))
    lines += auto_zoo.lines_of(_result("c", ["train", "channels(0.5)", "tflite(int8)"], 2.0, size_ratio=8.0))
    auto_zoo.compare_with_sweep(lines, tmp_path, 0.01)
    # a: 6x >= 3x; b: 2x < 90% of 3x and 3.9x smaller < 4x; c: slower but 8x smaller than fp32 (the sweep's 4x)
    assert [(x.sweep_variant, round(x.sweep_speedup, 2), x.sweep_smaller, round(x.sweep_drop, 4), x.keeps_up,
             x.as_good) for x in lines] == [("tflite-int8", 3.0, 4.0, 0.005, True, True),
                                           ("tflite-int8", 3.0, 4.0, 0.005, False, False),
                                           ("tflite-int8", 3.0, 4.0, 0.005, False, True)]
    text = auto_zoo.table(lines)
    assert ("| a | litert | channels(0.5) → tflite(int8) | 3.90× | 6.00× | +0.0040 [-0.0020, +0.0090] | conv2d | 12 "
            "| tflite-int8 | 4.00× | 3.00× | +0.0050 | yes | yes |") in text
    assert "on 1 of 3 model×runtime pairs (33%)" in text
    assert "at least as fast or as small) on 2 of 3 model×runtime pairs (67%) and on every runtime of 2 of 3" in text


def test_budget_is_absolute_on_unit_range_metrics_and_relative_otherwise():
    assert auto_zoo.budget_args(True, 0.01) == ["--max-drop", "0.01"]
    assert auto_zoo.budget_args(False, 0.01) == ["--max-drop", "0.01", "--relative"]
