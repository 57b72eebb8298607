"""The host-aware ONNX int8 flavour: measured once per host and model family, cached, overridable, and never a
flavour whose outputs drift from fp32. Which flavour wins depends on the CPU, so no test asserts it."""
import json

import numpy as np
import pytest

from export.quantize import int8_choice
from export.quantize.int8_choice import FLAVOURS, choose, flavour
from export.quantize.ptq import QuantRecipe, calibration_feeds, quantize_onnx


def _graph(activation: str = "Relu", scale: float = 1.0) -> bytes:
    """x (N, 16) -> MatMul -> activation -> MatMul -> y (N, 4): a tiny fp32 graph for ONNX Runtime."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((16, 32)) * scale).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="dense"),
             helper.make_node(activation, ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


CALIBRATION = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)


def _builder(tmp_path, fp32: bytes, built: list, broken=()):
    """build(flavour) for choose(): real ONNX Runtime quantization; ``broken`` flavours get scrambled weights."""
    src = tmp_path / "fp32.onnx"
    src.write_bytes(fp32)

    def build(f):
        built.append(f.name)
        if f.name in broken:
            src_broken = tmp_path / "broken.onnx"
            src_broken.write_bytes(_graph(scale=-3.0))
            source = src_broken
        else:
            source = src
        dst = tmp_path / f"{f.name}.onnx"
        quantize_onnx(source, dst, QuantRecipe("onnx", "int8", onnx_int8=f.name), CALIBRATION, ["x"])
        return dst.read_bytes()

    return build


def test_choice_is_measured_once_per_host_and_family(tmp_path, monkeypatch):
    fp32, built = _graph(), []
    feeds = calibration_feeds(CALIBRATION, ["x"])
    first = choose(fp32, _builder(tmp_path, fp32, built), feeds, cache=tmp_path / "cache")
    assert sorted(built) == sorted(FLAVOURS) and not first.cached and first.flavour in FLAVOURS
    saved = json.loads(first.path.read_text())
    assert saved["flavour"] == first.flavour and saved["host"] == int8_choice.host_description()
    assert {c["name"] for c in saved["candidates"]} == set(FLAVOURS)
    assert all(c["ms"] > 0 and c["error"] >= 0 for c in saved["candidates"]) and saved["fp32_ms"] > 0
    assert "fastest accurate flavour" in saved["reason"] and first.flavour in first.note()

    again = choose(fp32, _builder(tmp_path, fp32, built), feeds, cache=tmp_path / "cache")
    assert again.cached and again.flavour == first.flavour and len(built) == len(FLAVOURS)  # nothing rebuilt
    assert "cached choice" in again.note()

    other_family = _graph("Sigmoid")
    choose(other_family, _builder(tmp_path, other_family, built), feeds, cache=tmp_path / "cache")
    assert len(built) == 2 * len(FLAVOURS)
    same_family = _graph(scale=0.5)  # other weights, same op types: the cached choice holds
    assert choose(same_family, _builder(tmp_path, same_family, built), feeds, cache=tmp_path / "cache").cached

    other_host = dict(int8_choice.host_description(), cpu="another CPU")
    monkeypatch.setattr(int8_choice, "host_description", lambda: other_host)
    moved = choose(fp32, _builder(tmp_path, fp32, built), feeds, cache=tmp_path / "cache")
    assert not moved.cached and len(built) == 3 * len(FLAVOURS) and moved.path != first.path


def test_flavour_that_breaks_outputs_is_rejected_with_the_reason(tmp_path):
    fp32, built = _graph(), []
    broken = ("qdq-u8s8", "qop-s8s8", "qop-u8s8")
    choice = choose(fp32, _builder(tmp_path, fp32, built, broken), calibration_feeds(CALIBRATION, ["x"]),
                    cache=tmp_path)
    assert choice.flavour == "qdq-s8s8"
    rejected = {c.name: c.rejected for c in choice.candidates if c.rejected}
    assert set(rejected) == set(broken) and all("outputs drift from fp32" in r for r in rejected.values())
    assert "uint8 activations can saturate" in rejected["qdq-u8s8"]
    assert "rejected qop-u8s8: outputs drift" in choice.reason


def test_flavour_that_cannot_be_built_is_rejected(tmp_path):
    fp32 = _graph()
    good = _builder(tmp_path, fp32, [])

    def build(f):
        if f.name != "qdq-s8s8":
            raise RuntimeError("unsupported op")
        return good(f)

    choice = choose(fp32, build, calibration_feeds(CALIBRATION, ["x"]), cache=tmp_path)
    assert choice.flavour == "qdq-s8s8"
    assert {c.rejected for c in choice.candidates if c.name != "qdq-s8s8"} == {"cannot be built: unsupported op"}


def test_explicit_flavour_is_honoured(tmp_path):
    import onnx

    from export.onnx import resolve_int8

    recipe = QuantRecipe("onnx", "int8", onnx_int8="qop-u8s8")
    assert resolve_int8(None, recipe, CALIBRATION) == (recipe, None)  # nothing measured, nothing converted
    assert str(recipe) == "onnx(int8, qop-u8s8)"
    src, dst = tmp_path / "fp32.onnx", tmp_path / "q.onnx"
    src.write_bytes(_graph())
    quantize_onnx(src, dst, recipe, CALIBRATION, ["x"])
    graph = onnx.load(str(dst)).graph
    assert "QLinearMatMul" in {n.op_type for n in graph.node}  # QOperator, not QDQ
    zero_points = [i for i in graph.initializer if "zero_point" in i.name]
    assert zero_points and any(z.data_type == onnx.TensorProto.UINT8 for z in zero_points)


def test_reduce_range_only_for_uint8_activations_without_vnni():
    no_vnni = {"x86": True, "vnni": False}
    assert flavour("qdq-u8s8", no_vnni).reduce_range and flavour("qop-u8s8", no_vnni).reduce_range
    assert not flavour("qdq-s8s8", no_vnni).reduce_range
    assert not flavour("qdq-u8s8", {"x86": True, "vnni": True}).reduce_range
    assert not flavour("qdq-u8s8", {"x86": False, "vnni": False}).reduce_range


@pytest.mark.parametrize("kwargs,message", [
    ({"format": "onnx", "mode": "int8", "onnx_int8": "qdq-s4s4"}, "unknown ONNX int8 flavour 'qdq-s4s4'"),
    ({"format": "onnx", "mode": "dynamic", "onnx_int8": "qdq-u8s8"}, "applies to onnx int8 only"),
    ({"format": "tflite", "mode": "int8", "onnx_int8": "qdq-u8s8"}, "applies to onnx int8 only"),
])
def test_invalid_flavour_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantRecipe(**kwargs)


def test_cli_prints_the_flavour_and_why(cli, tmp_path):
    res = cli("compress", "quantize", "mlp", "--tiny", "--format", "onnx", "--mode", "int8", "--max-drop", "1",
              "-o", tmp_path / "a.onnx")  # the tiny mlp scores on 30 samples: the flavour line is the point
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "onnx int8 flavour:" in text and "fastest accurate flavour" in text and "x)" in text
    res = cli("export", "onnx", "mlp", "--tiny", "--quantize", "int8", "--onnx-int8", "qdq-s8s8", "--max-drop", "1",
              "-o", tmp_path / "b.onnx")  # the same 30-sample score (a fresh CI clone saw 0.8667 -> 0.6000)
    assert res.returncode == 0, res.stderr
    assert "onnx int8 flavour: qdq-s8s8 (chosen with --onnx-int8)" in res.stdout
    assert json.loads((tmp_path / "b.onnx.json").read_text())["chain"][-1] == "onnx(int8, qdq-s8s8)"
    res = cli("export", "onnx", "mlp", "--tiny", "--quantize", "int8", "--onnx-int8", "fast", "-o", tmp_path / "c.onnx")
    assert res.returncode == 2 and "unknown ONNX int8 flavour 'fast'" in res.stderr
    assert not (tmp_path / "c.onnx").exists()
