"""benchmarks profile: ONNX Runtime's and LiteRT's own op profilers on a tiny zoo model, ops mapped back to Keras
layers."""
import json

import pytest

from benchmarks import variants
from benchmarks.profiling import command as profile
from benchmarks.profiling import layers as profile_layers
from conftest import tiny_trained


@pytest.fixture(scope="module")
def cnn_variants(cache_dir):
    """The tiny cnn's onnx/tflite variants, built where the sweep keeps them (what `profile cnn --tiny` reuses)."""
    from models.subject import resolve

    tiny_trained("cnn")
    subject = resolve("cnn", tiny=True)
    work = cache_dir / "variants" / subject.path.stem
    return subject, {v: variants.build(variants.by_name(v), subject, work) for v in ("onnx-fp32", "onnx-int8",
                                                                                     "tflite-fp32", "tflite-int8")}


@pytest.mark.parametrize("variant", ["onnx-fp32", "onnx-int8"])
def test_onnx_profile_maps_ops_to_the_keras_layers(cnn_variants, variant, tmp_path):
    trained, paths = cnn_variants
    subject = profile.resolve("cnn", variant, batch=1, tiny=True)
    assert subject.path == paths[variant]  # the sweep's cached artifact, not a rebuild
    names = {layer.name for layer in trained.model.layers}
    result = profile.run_profile(subject, runs=10, threads=1)
    mapped = [x.layer for x in result.layers if not x.layer.startswith("(no Keras layer)")]
    assert set(mapped) <= names and {"conv2d", "dense"} <= {n.split("_")[0] for n in mapped}
    assert sum(x.ms for x in result.layers if x.layer in names) > 0.7 * result.total_ms  # most time is in layers
    assert sum(x.share for x in result.layers) == pytest.approx(1.0)
    assert [x.ms for x in result.layers] == sorted((x.ms for x in result.layers), reverse=True)
    if variant == "onnx-int8":
        assert any("QLinear" in t for x in result.layers for t in x.op_types)
    saved = json.loads(profile.save(result, tmp_path).read_text())
    assert saved["variant"] == variant and saved["layers"][0]["layer"] == result.layers[0].layer


def test_a_bare_onnx_file_maps_ops_by_their_scope(cnn_variants, tmp_path):
    _, paths = cnn_variants
    subject = profile.resolve(str(paths["onnx-fp32"]), None, batch=1)
    result = profile.run_profile(subject, runs=5, threads=1)
    assert result.model == "onnx-fp32" and {"conv2d", "dense"} & {x.layer for x in result.layers}


def test_layer_names_from_op_paths():
    layers = {"conv2d", "dense_1"}
    assert profile_layers.layer_of("cnn/conv2d/BiasAdd_quant_token_1", layers) == "conv2d"
    assert profile_layers.layer_of("dense_1_DequantizeLinear", layers) == "dense_1"
    assert profile_layers.layer_of("image_q", layers) is None
    assert profile_layers.layer_of("model/block/conv2d/Conv2D", None) == "conv2d"


@pytest.mark.parametrize("variant,runtime", [("tflite-fp32", "litert"), ("tflite-int8", "litert"),
                                             ("tflite-int8", "litert-noxnnpack")])
def test_litert_profile_maps_ops_to_the_keras_layers(cnn_variants, variant, runtime):
    trained, paths = cnn_variants
    subject = profile.resolve("cnn", variant, batch=1, tiny=True)
    assert subject.path == paths[variant]
    names = {layer.name for layer in trained.model.layers}
    result = profile.run_profile(subject, runtime, runs=20, threads=1)
    assert result.runtime == runtime and "CompiledModel profiler" in result.profiler
    mapped = [x.layer for x in result.layers if not x.layer.startswith("(no Keras layer)")]
    assert set(mapped) <= names and {"conv2d", "conv2d_1", "max_pooling2d", "flatten"} <= set(mapped)
    assert not any("unmatched" in x.layer for x in result.layers)  # every XNNPACK operator found its node
    assert sum(x.share for x in result.layers) == pytest.approx(1.0)
    # the convolutions are among the slowest layers, and the Keras layers hold most of the time (a tiny model timed
    # 20 times on a shared machine: loose bounds, the mapping above is the exact part)
    assert {"conv2d", "conv2d_1"} & {x.layer for x in result.layers[:3]}
    assert sum(x.ms for x in result.layers if x.layer in names) > 0.6 * result.total_ms
    types = {t for x in result.layers for t in x.op_types}
    if runtime == "litert-noxnnpack":
        assert {"CONV_2D", "QUANTIZE", "DEQUANTIZE"} <= types
    elif variant == "tflite-int8":
        assert any("QC8" in t for t in types) and any(t.startswith("Convert") for t in types)
    else:
        assert any("F32" in t for t in types)


def test_xnnpack_operators_match_tflite_nodes_in_order():
    from benchmarks.profiling.litert import Node, assign, run_events

    nodes = [Node(0, "QUANTIZE", None), Node(1, "CONV_2D", "conv2d"), Node(2, "RESHAPE", "flatten"),
             Node(3, "FULLY_CONNECTED", "dense")]
    ops = ["Convert (NC)", "Convolution (NHWC, QC8) IGEMM", "Static Reshape (NC)", "Static Reshape (NC)",
           "Fully Connected (NC, QS8, QC8W) GEMM", "Frobnicate (NC)"]
    got = assign(ops, nodes)
    assert [n.index if n else None for n in got] == [0, 1, 2, 3, 3, None]  # glue reshape goes to the FC it feeds
    events = [(op, 8, 5, i) for i, op in enumerate(ops)]
    layers, = [profile_layers.aggregate(run_events(events, nodes), 1, {"conv2d", "flatten", "dense"})[1]]
    assert {x.layer for x in layers} == {"(no Keras layer) Convert (NC)", "conv2d", "flatten", "dense",
                                         "(unmatched XNNPACK operator) Frobnicate (NC)"}


def test_profile_cli_on_litert(cnn_variants, cli, tmp_path):
    res = cli("benchmarks", "profile", "cnn", "--tiny", "--variant", "tflite-int8", "--runs", "5", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "cnn tflite-int8 on litert" in res.stdout and "conv2d" in res.stdout
    assert json.loads((tmp_path / "profiles" / "cnn--tflite-int8--litert.json").read_text())["layers"]


def test_profile_cli_prints_layers_and_json(cnn_variants, cli, tmp_path):
    res = cli("benchmarks", "profile", "cnn", "--tiny", "--variant", "onnx-int8", "--runs", "5", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "cnn onnx-int8 on onnxruntime-cpu" in res.stdout and "conv2d" in res.stdout
    res = cli("benchmarks", "profile", "cnn", "--tiny", "--variant", "onnx-int8", "--runs", "5", "--json",
              "--out", tmp_path)
    assert json.loads(res.stdout)["layers"][0]["share"] > 0
    bad = cli("benchmarks", "profile", "cnn", "--tiny", "--variant", "fp32", "--out", tmp_path)
    assert bad.returncode == 2 and "profile a tflite or onnx variant" in bad.stderr


def test_reading_a_tflite_graph_leaves_no_descriptor_open(cnn_variants):
    """flatbuffer_utils.read_model leaks the fd it mmaps through; the sweep's int8 warnings read each int8 file
    once per runtime and thread count, and a full sweep ran out of select()-able descriptors."""
    import os

    from benchmarks.report.int8_causes import tflite_facts
    from benchmarks.profiling.litert import tflite_nodes

    path = cnn_variants[1]["tflite-int8"]
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        tflite_facts(path)
        assert tflite_nodes(path, None)[0]
    assert len(os.listdir("/proc/self/fd")) - before < 5  # 40 reads: the leak opened 40
