"""Report summary, unavailable runtimes, warnings beyond noise and profiles, on hand-made rows."""
import json

import pytest

from benchmarks.report import markdown as report
from benchmarks.report import summary as rs


def row(variant, runtime, p50, metric=0.9, size=1000, batch=1, threads=2, p90=None, **kw):
    base = dict(key=f"{kw.get('model', 'm')}-{variant}-{runtime}-{batch}-{threads}-{p50}", model="m", model_key="m-1",
                variant=variant, runtime=runtime, provider="cpu", batch=batch, threads=threads, status="ok",
                reason=None, metric_name="accuracy", higher_is_better=1, metric=metric, size=size, size_gzip=size // 2,
                init_ms=1.0, first_ms=1.0, runs=50, min_ms=p50, mean_ms=p50, std_ms=0.01, p50_ms=p50,
                p90_ms=p50 * 1.02 if p90 is None else p90, p99_ms=p50 * 1.05, max_ms=p50 * 2,
                host="h | Xeon | 2 cores | avx2", versions={"tf": "x"}, git_rev="abc", created="now")
    base.update(kw)
    return base


def choice_for(rows, runtime):
    (c,) = [c for c in rs.choose(rows) if c.runtime == runtime]
    return c


def test_summary_picks_the_fastest_variant_within_one_point():
    rows = [row("fp32", "keras", 3.0, 0.90),
            row("tflite-fp32", "litert", 1.0, 0.90, size=4000),
            row("tflite-float16", "litert", 0.9, 0.90, size=2000),
            row("tflite-int8", "litert", 0.4, 0.895, size=1000),  # -0.5 point: allowed
            row("tflite-dynamic", "litert", 0.3, 0.85, size=1000),  # faster, but -5 points
            row("tflite-int8", "litert", 0.2, 0.895, size=1000, batch=32)]  # no fp32 at batch 32: not comparable
    c = choice_for(rows, "litert")
    assert c.best["variant"] == "tflite-int8" and c.best["batch"] == 1
    assert c.speedup == pytest.approx(2.5) and c.size_ratio == pytest.approx(0.25)
    assert c.metric_change == pytest.approx(-0.005)
    md = report.markdown(rows)
    assert ("| m | litert | tflite-fp32 | 0.9000 | 1.000 | 3.9 | tflite-int8 | 1 | 2 | 0.400 | 2.50× | 0.25 "
            "| -0.0050 |") in md
    assert "- **m**: **tflite-int8 on litert** (batch 1, 2 threads): p50 0.400 ms, 2.50× faster than tflite-fp32" in md
    assert md.index("## Summary") < md.index("## Details")


def test_lower_is_better_metric_uses_its_direction():
    lib = dict(metric_name="rmse", higher_is_better=0)
    rows = [row("fp32", "keras", 3.0, 0.50, **lib),
            row("onnx-fp32", "onnxruntime-cpu", 1.0, 0.50, **lib),
            row("onnx-float16", "onnxruntime-cpu", 0.8, 0.504, **lib),  # +0.004 rmse: within 1 % of 0.50
            row("onnx-int8", "onnxruntime-cpu", 0.5, 0.40, **lib),  # lower rmse is better: allowed, and fastest
            row("tflite-fp32", "litert", 1.0, 0.50, **lib),
            row("tflite-int8", "litert", 0.5, 0.52, **lib)]  # +0.02 rmse: 4 %, outside the budget
    assert choice_for(rows, "onnxruntime-cpu").best["variant"] == "onnx-int8"
    litert = choice_for(rows, "litert")
    assert litert.best is litert.baseline and litert.note == "no other variant within 1 point is faster"


def test_nothing_within_budget_says_so():
    rows = [row("fp32", "keras", 3.0, 0.90),
            row("tflite-fp32", "litert", 1.0, 0.85),  # the conversion itself lost 5 points
            row("tflite-int8", "litert", 0.4, 0.80)]
    c = choice_for(rows, "litert")
    assert c.best is None and c.baseline["variant"] == "tflite-fp32"
    assert c.note == "no variant within 1 point of Keras fp32 (accuracy 0.9000)"
    assert "| m | litert | tflite-fp32 | 0.8500 | 1.000 | 1.0 | — |" in report.markdown(rows)


def test_unavailable_runtimes_are_listed_once_and_never_as_rows():
    reason = "CUDAExecutionProvider is not in this onnxruntime build's providers (CPUExecutionProvider)"
    rows = [row("fp32", "keras", 3.0), row("onnx-fp32", "onnxruntime-cpu", 1.0)]
    rows += [row(v, "onnxruntime-cuda", 0, status="unavailable", reason=reason, p50_ms=None, model=m)
             for v in ("onnx-fp32", "onnx-int8", "onnx-float16") for m in ("m", "other")]
    md = report.markdown(rows)
    assert md.count(reason) == 1 and "- onnxruntime-cuda: " + reason in md
    assert "To enable: on a machine with an NVIDIA GPU" in md and "(6 row(s) not measured)" in md
    assert "| onnxruntime-cuda |" not in md and "| onnx-int8 |" not in md
    page = report.html(rows)
    assert page.count("CUDAExecutionProvider is not in") == 1 and "<td>onnxruntime-cuda</td>" not in page
    assert [c.runtime for c in rs.choose(rows)] == ["keras", "onnxruntime-cpu"]


def qdq_onnx(path, zero_point_type):
    """A hand-made QDQ graph: x -> Q -> DQ -> Conv (DQ weights) -> Relu (left in float) -> Softmax."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    zp = np.zeros((), dtype=np.int8 if zero_point_type == TensorProto.INT8 else np.uint8)
    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(zp, "zp"),
             numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "wq"),
             numpy_helper.from_array(np.zeros((), np.int8), "wzp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "wzp"], ["w"]),
             helper.make_node("Conv", ["xd", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Softmax", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph), str(path))


def test_warnings_fire_only_beyond_noise_and_name_batch_threads_and_cause(tmp_path):
    from onnx import TensorProto

    rows = [row("onnx-fp32", "onnxruntime-cpu", 1.0), row("onnx-int8", "onnxruntime-cpu", 2.0),  # clear
            row("tflite-fp32", "litert", 0.002), row("tflite-int8", "litert", 0.0025),  # µs jitter: below the floor
            row("tflite-fp32", "litert", 1.0, threads=1, p90=1.6),
            row("tflite-int8", "litert", 1.3, threads=1, p90=1.4),  # +30 % but within fp32's own spread
            row("tflite-fp32", "litert-noxnnpack", 1.0), row("tflite-int8", "litert-noxnnpack", 1.5)]
    warnings = rs.slower_than_fp32(rows, cache=tmp_path)
    assert [w.text.split(" (")[0] for w in warnings] == [
        "onnx-int8 is slower than onnx-fp32 on onnxruntime-cpu at batch 1, 2 threads",
        "tflite-int8 is slower than tflite-fp32 on litert-noxnnpack at batch 1, 2 threads"]
    # no artifact in the cache: said so, nothing counted
    assert all("its artifact is not in the cache (m-1/" in w.text and "nothing was counted" in w.text
               for w in warnings)
    # the artifact is there: the cause is counted in it (flavour vs host flags, Q/DQ vs compute, float nodes)
    work = tmp_path / "variants" / "m-1"
    work.mkdir(parents=True)
    qdq_onnx(work / "onnx-int8.onnx", TensorProto.INT8)
    text = rs.slower_than_fp32(rows[:2], cache=tmp_path)[0].text
    assert "S8S8 QDQ (signed int8 activations): the host flags (avx2) show no VNNI" in text
    assert "3 QuantizeLinear/DequantizeLinear nodes around 3 compute nodes (1 of them quantized)" in text
    assert "2 compute nodes left in float (Relu ×1, Softmax ×1)" in text
    vnni = [dict(r, host="h | Xeon | 2 cores | avx2 avx512f avx512_vnni") for r in rows[:2]]
    assert "this host reports VNNI" in rs.slower_than_fp32(vnni, cache=tmp_path)[0].text
    qdq_onnx(work / "onnx-int8.onnx", TensorProto.UINT8)
    assert "S8S8" not in rs.slower_than_fp32(vnni, cache=tmp_path)[0].text
    tiny = [row("onnx-fp32", "onnxruntime-cpu", 0.03), row("onnx-int8", "onnxruntime-cpu", 0.06)]
    assert "µs-scale graph (fp32 p50 30 µs)" in rs.slower_than_fp32(tiny, cache=tmp_path)[0].text
    # a steady 7 -> 11 µs (mlp's ONNX int8 measured on an AVX-512 host) is warned; the same with a jittery int8 is not
    mlp = [row("onnx-fp32", "onnxruntime-cpu", 0.0067, p90=0.0068),
           row("onnx-int8", "onnxruntime-cpu", 0.0107, p90=0.0108)]
    assert "µs-scale graph (fp32 p50 7 µs)" in rs.slower_than_fp32(mlp, cache=tmp_path)[0].text
    assert rs.slower_than_fp32([mlp[0], dict(mlp[1], p90_ms=0.017)], cache=tmp_path) == []
    # the console keeps its one-line form; a repeated row does not repeat its warning
    lines = report.slower_quantized(rows + [dict(rows[1], key="again")], cache=tmp_path)
    assert lines[0].startswith("m: onnx-int8 is slower") and len(lines) == 2
    # the written report looks in the sweep's --cache-dir too (not the default cache)
    for r in rows:
        r.update(metric_name="accuracy", metric=0.9, higher_is_better=1)
    report.write(rows, tmp_path / "out", cache=tmp_path)
    for name in ("report.md", "report.html"):
        text = (tmp_path / "out" / name).read_text()
        assert "QuantizeLinear/DequantizeLinear nodes around" in text, name


def test_int8_cause_counts_float_ops_in_the_tflite_file_and_reads_profiles(tmp_path):
    """A TFLite file whose ops run in float, filed as the int8 variant: the warning counts them; stored profiles
    of both variants name the layer int8 made slower."""
    from export.quantize.ptq import QuantRecipe
    from conftest import tiny_trained
    from export.exporter import convert
    from models.subject import resolve

    tiny_trained("mlp")
    work = tmp_path / "variants" / "m-1"
    work.mkdir(parents=True)
    (work / "tflite-int8.tflite").write_bytes(convert(resolve("mlp", tiny=True), QuantRecipe("tflite", "fp32")).data)
    rows = [row("tflite-fp32", "litert", 1.0), row("tflite-int8", "litert", 1.5)]
    profiles = {("m", v, "litert"): {"layers": [{"layer": "dense", "ms": ms}, {"layer": "dense_1", "ms": 0.1}]}
                for v, ms in (("tflite-fp32", 0.2), ("tflite-int8", 0.5))}
    text = rs.slower_than_fp32(rows, cache=tmp_path, profiles=profiles)[0].text
    assert "compute ops run in float (FULLY_CONNECTED ×" in text
    assert "profiled: int8 is slower in dense (0.5000 vs 0.2000 ms)" in text and "dense_1" not in text


def test_warnings_are_grouped_per_model():
    rows = [row("onnx-fp32", "onnxruntime-cpu", 1.0, model=m) for m in ("a", "b")]
    rows += [row("onnx-int8", "onnxruntime-cpu", 2.0, model=m) for m in ("a", "b")]
    md = report.markdown(rows)
    section = md[md.index("## Warnings"):md.index("## Details")]
    assert section.count("### a") == 1 and section.count("### b") == 1 and section.count("WARNING:") == 2
    assert section.index("### a") < section.index("### b")


def test_report_shows_fp32_and_int8_profiles_side_by_side(tmp_path):
    rows = [row("fp32", "keras", 3.0), row("onnx-fp32", "onnxruntime-cpu", 1.0),
            row("onnx-int8", "onnxruntime-cpu", 0.5), row("tflite-fp32", "litert", 1.0),
            row("tflite-int8", "litert", 0.8)]
    (tmp_path / "profiles").mkdir()
    for variant, runtime, conv, dense in (("onnx-fp32", "onnxruntime-cpu", 0.6, 0.3),
                                          ("onnx-int8", "onnxruntime-cpu", 0.2, 0.25),
                                          ("tflite-fp32", "litert", 0.1, 0.3), ("tflite-int8", "litert", 0.4, 0.1)):
        total = conv + dense
        (tmp_path / "profiles" / f"m--{variant}--{runtime}.json").write_text(json.dumps({
            "model": "m", "variant": variant, "runtime": runtime, "path": "x", "runs": 50, "batch": 1,
            "threads": 2, "total_ms": total, "profiler": "test profiler", "created": "now",
            "layers": [{"layer": "conv2d", "ms": conv, "share": conv / total, "ops": 1, "op_types": ["Conv"]},
                       {"layer": "dense", "ms": dense, "share": dense / total, "ops": 1, "op_types": ["Gemm"]}]}))
    (tmp_path / "profiles" / "broken.json").write_text("{")
    md, page, _ = (p.read_text() for p in report.write(rows, tmp_path))
    assert "## Per-layer profiles" in md
    assert "| layer | onnx-fp32 ms | share | onnx-int8 ms | share | int8 speedup |" in md
    assert "| conv2d | 0.600 | 67% | 0.200 | 44% | 3.00× |" in md
    assert "| dense | 0.300 | 33% | 0.250 | 56% | 1.20× |" in md
    assert "onnx-int8 is faster than onnx-fp32 in every layer both profiles have" in md
    assert "| layer | tflite-fp32 ms | share | tflite-int8 ms | share | int8 speedup |" in md
    assert "| conv2d | 0.100 | 25% | 0.400 | 80% | 0.25× (not faster) |" in md
    assert "tflite-int8 did not speed up: conv2d (0.100 → 0.400 ms)" in md
    assert "Per-layer profiles" in page and "<td>conv2d</td>" in page and "did not speed up: conv2d" in page
    assert "m on litert: tflite-fp32" in page and "m on onnxruntime-cpu: onnx-fp32" in page


def test_page_inlines_plotly_once_and_needs_no_network(tmp_path):
    rows = [row("fp32", "keras", 3.0), row("tflite-fp32", "litert", 1.0), row("tflite-int8", "litert", 0.4)]
    page = report.write(rows, tmp_path)[1].read_text()
    assert page.count("plotly.js v") == 1  # the library's banner: one copy for the whole page
    assert "<script src=" not in page and "<link" not in page  # nothing to fetch: works offline
    assert "class='sortable'" in page and "<details class='model' open" in page
    assert page.index("Summary (budget: 1 point)") < page.index("Per model")


def test_a_speedup_within_the_rows_spread_is_not_a_recommendation():
    rows = [row("fp32", "keras", 3.0), row("tflite-fp32", "litert", 1.0, p90=1.6), row("tflite-int8", "litert", 0.8)]
    c = choice_for(rows, "litert")
    assert c.best is c.baseline and c.speedup == 1.0
    assert c.note.startswith("tflite-int8 is 1.25× faster at p50, but within the rows' spread (p90 - p50 up to 0.600")


def test_rows_without_a_metric_still_make_a_summary():
    rows = [row("fp32", "keras", 3.0, None), row("tflite-fp32", "litert", 1.0, None),
            row("tflite-int8", "litert", 0.4, None)]
    c = choice_for(rows, "litert")
    assert c.best is None and c.note == "no metric to compare with: neither Keras fp32 nor tflite-fp32 has one"
    assert "no metric to compare with" in report.markdown(rows) and report.html(rows)
