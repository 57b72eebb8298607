"""Per-layer int8 sensitivity (TFLite QuantizationDebugger, ONNX Runtime qdq_loss_debug) mapped to Keras layer
names, and the greedy keep-in-float search."""
import math

import numpy as np
import pytest

from export.quantize.mixed_precision import keep_in_float
from export.quantize.ptq import QuantRecipe
from export.quantize.sensitivity import ONNX_MEASURE, TFLITE_MEASURE, LayerSensitivity, analyse, layer_of, rank

HARD = "hard_conv"


def _hard_cnn_file(tmp_path):
    """A CNN whose ``hard_conv`` int8 weights lose everything: one input channel is always 0 (ReLU of a zero kernel
    and a negative bias) and carries kernel weights 1000x the others, so the per-channel weight scale rounds all
    the weights that matter to zero. Nothing else in the model is hard to quantize. Its batch norm and ReLU layers
    fuse into it: the ranking must still name the conv."""
    from models.backend import keras

    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="first_conv")(inp)
    x = keras.layers.Conv2D(8, 3, name=HARD)(x)
    x = keras.layers.BatchNormalization(name="bn")(x)  # fused into the conv by both converters ...
    x = keras.layers.Activation("relu", name="act")(x)  # ... and so is this separate ReLU layer
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name="hardcnn")
    kernel, bias = model.get_layer("first_conv").get_weights()
    kernel[..., 0], bias[0] = 0.0, -1.0  # channel 0 is dead: relu(-1) = 0 on every input
    bias[1:] = 0.1
    model.get_layer("first_conv").set_weights([kernel, bias])
    kernel, bias = model.get_layer(HARD).get_weights()
    kernel[:, :, 0, :] = 1000.0 * np.abs(kernel).max()
    model.get_layer(HARD).set_weights([kernel, bias])
    path = tmp_path / "hardcnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def hard_subject(tmp_path_factory):
    from models.subject import resolve

    return resolve(str(_hard_cnn_file(tmp_path_factory.mktemp("hard"))))


def test_layer_of_matches_whole_name_components():
    layers = {"dense_1", "dense_10", "backbone", "conv", "lstm"}
    assert layer_of("model/dense_10/MatMul;model/dense_10/BiasAdd", layers) == "dense_10"
    assert layer_of("model/dense_1/MatMul", layers) == "dense_1"
    assert layer_of("model/backbone/conv/Conv2D", layers) == "backbone"  # the top-level layer of a nested model
    assert layer_of("model/lstm/lstm_cell/MatMul_3", layers) == "lstm"  # unrolled RNN steps
    assert layer_of("StatefulPartitionedCall:0", layers) is None
    assert layer_of("model/dense_2/MatMul", layers) is None  # no substring guess


@pytest.mark.parametrize("fmt,measure", [("tflite", TFLITE_MEASURE), ("onnx", ONNX_MEASURE)])
def test_rank_puts_the_hard_layer_first_and_excluding_it_keeps_it_float(hard_subject, fmt, measure):
    ranking = analyse(hard_subject, QuantRecipe(fmt, "int8", **({"onnx_int8": "qdq-s8s8"} if fmt == "onnx" else {})))
    layers = [r.layer for r in ranking.layers]
    assert layers[0] == HARD, [(r.layer, r.error) for r in ranking.layers]
    assert set(layers) <= {layer.name for layer in hard_subject.model.layers}
    top, second = ranking.layers[0], ranking.layers[1]
    assert top.measure == measure and top.ops and all(math.isfinite(r.error) for r in ranking.layers)
    assert top.error > 5 * max(second.error, 1e-9)  # far ahead, not a near tie
    assert ranking.samples > 0 and ranking.seconds > 0
    assert _float_layers(hard_subject, fmt, ()) & {HARD} == set()  # quantized by default ...
    assert HARD in _float_layers(hard_subject, fmt, (HARD,))  # ... and float when excluded by the ranked name
    # excluded layers are not ranked again (the ranking of what is left)
    again = rank(hard_subject, QuantRecipe(fmt, "int8", exclude=(HARD,),
                                          **({"onnx_int8": "qdq-s8s8"} if fmt == "onnx" else {})))
    assert HARD not in [r.layer for r in again] and again


def _float_layers(subject, fmt, exclude):
    """Layers none of whose weighted ops/nodes is quantized in the exported file."""
    import onnx

    from export.quantize.sensitivity import kernel_layers
    from export.exporter import convert

    names = kernel_layers(subject.model)
    owner = lambda name, layers: layer_of(name, layers, names)  # noqa: E731  (the conv of a fused conv+BN+ReLU)
    recipe = QuantRecipe(fmt, "int8", exclude=exclude, **({"onnx_int8": "qdq-s8s8"} if fmt == "onnx" else {}))
    data = convert(subject, recipe).data
    quantized = set()
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=data)
        details = {d["index"]: d for d in interp.get_tensor_details()}
        for op in interp._get_ops_details():
            if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
                layer = owner(details[op["outputs"][0]]["name"], names)
                if layer and any(details[i]["dtype"] == np.int8 for i in op["inputs"] if i in details):
                    quantized.add(layer)
    else:
        graph = onnx.load_from_string(data).graph
        dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        for n in graph.node:
            if n.op_type in ("Conv", "MatMul", "Gemm"):
                layer = owner(n.name, names)
                if layer and len(n.input) > 1 and n.input[1] in dq:  # int8 weights
                    quantized.add(layer)
    return names - quantized


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_rank_tiny_zoo_cnn(fmt):
    from models.subject import resolve

    subject = resolve("cnn", tiny=True)
    ranking = analyse(subject, QuantRecipe(fmt, "int8", **({"onnx_int8": "qdq-u8s8"} if fmt == "onnx" else {})))
    weighted = {layer.name for layer in subject.model.layers if layer.weights}
    assert weighted <= {r.layer for r in ranking.layers}  # every conv/dense is quantized, so ranked
    assert [r.error for r in ranking.layers] == sorted((r.error for r in ranking.layers), reverse=True)
    if fmt == "tflite":  # the final softmax's tensor is named after the signature, not a layer: said so
        assert any("SOFTMAX" in u for u in ranking.unmapped)


def test_rank_refuses_modes_it_cannot_rank(hard_subject):
    with pytest.raises(ValueError, match="int8 recipe"):
        rank(hard_subject, QuantRecipe("tflite", "16x8"))
    with pytest.raises(ValueError, match="int8 recipe"):
        rank(hard_subject, QuantRecipe("onnx", "dynamic"))


# ------------------------------------------------------------------------------------------------- greedy search

def _ranking(*names):
    return [LayerSensitivity(n, float(10 - i), "test") for i, n in enumerate(names)]


def _fake(drops):
    calls = []

    def drop_of(kept):
        calls.append(tuple(kept))
        return drops[frozenset(kept)]

    return drop_of, calls


def test_budget_met_without_reverts():
    drop_of, calls = _fake({frozenset(): 0.004})
    mp = keep_in_float(_ranking("a", "b"), drop_of, budget=0.01)
    assert mp.kept_float == () and mp.within_budget and mp.drop == 0.004
    assert calls == [()] and len(mp.steps) == 1 and "nothing kept in float" in mp.steps[0].why


def test_useless_revert_is_stepped_back():
    drop_of, calls = _fake({frozenset(): 0.05, frozenset({"a"}): 0.03, frozenset({"a", "b"}): 0.04,
                            frozenset({"a", "c"}): 0.008})
    mp = keep_in_float(_ranking("a", "b", "c", "d"), drop_of, budget=0.01)
    assert mp.kept_float == ("a", "c") and mp.within_budget and mp.drop == 0.008
    assert calls == [(), ("a",), ("a", "b"), ("a", "c")]  # stops at the budget: d never tried
    assert [s.accepted for s in mp.steps] == [True, True, False, True]
    assert "stepped back" in mp.steps[2].why and "b" in mp.steps[2].why
    assert "within the budget" in mp.steps[3].why


def test_unreachable_budget_returns_the_best_found():
    drop_of, _ = _fake({frozenset(): 0.2, frozenset({"a"}): 0.1, frozenset({"a", "b"}): 0.15,
                        frozenset({"a", "c"}): 0.05})
    mp = keep_in_float(_ranking("a", "b", "c"), drop_of, budget=0.01)
    assert not mp.within_budget and mp.kept_float == ("a", "c") and mp.drop == 0.05
    assert "budget not met after trying 3 layer(s)" in mp.steps[-1].why


def test_max_layers_limits_the_tries():
    drop_of, calls = _fake({frozenset(): 0.2, frozenset({"a"}): 0.1})
    mp = keep_in_float(_ranking("a", "b", "c"), drop_of, budget=0.01, max_layers=1)
    assert calls == [(), ("a",)] and not mp.within_budget and mp.kept_float == ("a",)
    assert "2 more not tried" in mp.steps[-1].why


def test_unscorable_candidate_is_stepped_back():
    drop_of, _ = _fake({frozenset(): 0.2, frozenset({"a"}): math.inf, frozenset({"b"}): 0.0})
    mp = keep_in_float(_ranking("a", "b"), drop_of, budget=0.01)
    assert mp.kept_float == ("b",) and mp.within_budget and "unscored" in mp.steps[1].why
