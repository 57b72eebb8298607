"""Post-training weight algorithms (compress.techniques.weight_algos): each on a small model built here where plain
int8 PTQ measurably loses, asserting the recovery, the exported file's agreement with the Keras model the
algorithms produced (AdaRound's weights exactly), fp32 equality after CLE, and the per-layer skip reasons.

Recovery is top-1 agreement with the fp32 model on held-out inputs (the labels are the fp32 model's own, so the
fp32 model scores 1.0). Margins were measured over seeds 0-2 (ranges in each test's comment).
"""
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from ai_edge_litert.interpreter import Interpreter
from onnx import numpy_helper

from export import runtime
from export.quantize.ptq import QuantRecipe
from export.onnx import convert as onnx_convert
from export.tflite import convert
from models.backend import keras
from models.engines.keras3 import keras3
from compress.techniques.preflight import preflight
from compress.techniques.weight_algos import common, parse, pipeline
from compress.techniques.weight_algos.adaround import adaround
from compress.techniques.weight_algos.bias_correction import bias_correction
from compress.techniques.weight_algos.cle import cle

INT8 = QuantRecipe("tflite", "int8")


# ------------------------------------------------------------------------------------------------------ models


def ranged_convnet(seed: int, spread=(1e-3, 1e2)):
    """conv -> BN -> ReLU -> depthwise -> BN -> ReLU -> 1x1 conv -> ReLU -> pool -> dense, whose BN outputs are
    scaled per channel by factors log-spaced over ``spread`` and the next layer's input channels by the inverse:
    the fp32 function of a well-ranged net, but channel ranges that differ by 10^5 (the activation's one int8 scale
    loses the small channels, the next kernel's per-output-channel scale loses the small input channels)."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.Conv2D(24, 1, name="c2")(x)
    x = keras.layers.ReLU(name="r3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(x))
    c, d = (np.exp(rng.permutation(np.linspace(np.log(spread[0]), np.log(spread[1]), 16))) for _ in range(2))
    model.get_layer("bn1").set_weights([c, rng.normal(0, 0.2, 16) * c, rng.normal(0, 0.1, 16), rng.uniform(.5, 2, 16)])
    (k,) = model.get_layer("dw").get_weights()
    model.get_layer("dw").set_weights([k / c[None, None, :, None]])
    model.get_layer("bn2").set_weights([d, rng.normal(0, 0.2, 16) * d, rng.normal(0, 0.1, 16), rng.uniform(.5, 2, 16)])
    k, b = model.get_layer("c2").get_weights()
    model.get_layer("c2").set_weights([k / d[None, None, :, None], b])
    # a head whose logits are centred and scaled per class: the fp32 labels spread over the classes
    x = images(999, 200)
    z = keras.Model(model.inputs, model.get_layer("head").input).predict(x, verbose=0) @ model.get_layer(
        "head").get_weights()[0]
    w = model.get_layer("head").get_weights()[0]
    model.get_layer("head").set_weights([w / z.std(0), -z.mean(0) / z.std(0)])
    return model


def images(seed: int, n: int):
    return np.random.default_rng(seed).normal(size=(n, 16, 16, 3)).astype("float32")


def outlier_mlp(seed: int, hidden: int = 512):
    """features -> Dense(512, relu) -> Dense(10) whose kernel has one weight of 1 per class (it sets the int8 scale)
    and 511 small positive ones below half a step: round-to-nearest zeroes them all, a biased error (the mean of
    the ReLU inputs they weigh is positive) that shifts each class's logit by a different amount."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((32,), name="features")
    h = keras.layers.Dense(hidden, activation="relu", name="hidden")(inp)
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(h))
    w = rng.uniform(0, 1, (hidden, 10)) * rng.uniform(0, 0.45 / 127, 10)
    w[np.arange(10), np.arange(10)] = 1.0
    model.get_layer("head").set_weights([w.astype("float32"), np.zeros(10, "float32")])
    return model


def features(seed: int, n: int):
    return np.random.default_rng(seed).normal(size=(n, 32)).astype("float32")


def bert_block(act: str = "gelu"):
    """A tiny BERT-like encoder block: attention, residual + LayerNorm, a Dense-act-Dense FFN, a bias-free head."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 32), name="tokens")
    a = keras.layers.MultiHeadAttention(2, 16, name="attn")(inp, inp)
    x = keras.layers.LayerNormalization(name="ln1")(keras.layers.Add(name="res1")([inp, a]))
    h = keras.layers.Dense(64, activation=act, name="ffn1")(x)
    h = keras.layers.Dense(32, name="ffn2")(h)
    x = keras.layers.LayerNormalization(name="ln2")(keras.layers.Add(name="res2")([x, h]))
    p = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inp, keras.layers.Dense(4, use_bias=False, name="cls")(p))


def tokens(seed: int, n: int):
    return np.random.default_rng(seed).normal(size=(n, 16, 32)).astype("float32")


# ----------------------------------------------------------------------------------------------------- helpers


def tflite_predict(data: bytes, x):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(data)
        # LiteRT's reference kernels: XNNPACK refuses the plain int8 file of the ranged convnet outright
        return runtime.load(path, xnnpack=False).predict(x)


def agreement(model, data: bytes, x) -> float:
    return float((tflite_predict(data, x).argmax(1) == model.predict(x, verbose=0).argmax(1)).mean())


def tflite_kernels(data: bytes) -> dict:
    """{tensor name: (int8 codes, scales broadcastable to them)} of every per-channel int8 weight in the file."""
    interp = Interpreter(model_content=data)
    out = {}
    for d in interp.get_tensor_details():
        q = d["quantization_parameters"]
        if d["dtype"] != np.int8 or len(d["shape"]) < 2 or q["scales"].size < 1:
            continue
        try:
            codes = interp.get_tensor(d["index"])
        except ValueError:  # an activation: no data in the file
            continue
        shape = [1] * codes.ndim
        shape[q["quantized_dimension"]] = -1
        out[d["name"]] = (codes, q["scales"].reshape(shape))
    return out


def in_tflite_layout(kind: str, kernel):
    if kind == "conv":
        return np.transpose(kernel, (3, 0, 1, 2))
    if kind == "depthwise":
        return kernel.reshape(1, kernel.shape[0], kernel.shape[1], -1)
    return kernel.T


def assert_file_holds_keras_kernels(model, data: bytes, names, on_grid: bool = True):
    """The file's int8 codes are the Keras kernels' nearest codes, and (``on_grid``) its dequantized weights are the
    Keras kernels themselves (scales equal to float32 rounding)."""
    kernels = tflite_kernels(data)
    for name in names:
        layer = model.get_layer(name)
        expected = in_tflite_layout(common.kind_of(layer), layer.get_weights()[0])
        (tensor,) = [t for t in kernels if f"/{name}/" in t]
        codes, scale = kernels[tensor]
        assert np.array_equal(np.round(expected / scale), codes), name
        if on_grid:
            np.testing.assert_allclose(codes * scale, expected, rtol=1e-6, atol=0, err_msg=name)


# ------------------------------------------------------------------------------------------------------- tests


def test_names_parse_into_their_run_order():
    assert parse("bias-correction,cle") == ("cle", "bias-correction")
    assert parse(["adaround", "bias_correction", "cle"]) == ("cle", "adaround", "bias-correction")
    with pytest.raises(ValueError, match="unknown weight algorithm 'foo'; valid: cle, adaround, bias-correction"):
        parse("cle,foo")
    assert str(QuantRecipe("tflite", "int8", weight_algos="adaround,cle")) == "tflite(int8, cle+adaround)"
    with pytest.raises(ValueError, match="need int8 or 16x8"):
        QuantRecipe("tflite", "dynamic", weight_algos="cle")


@pytest.mark.parametrize("seed", [0, 1])
def test_cle_recovers_int8_accuracy_lost_to_channel_ranges(seed):
    # measured agreement, seeds 0/1/2: plain 0.09/0.11/0.08; cle 0.75/0.67/0.56; cle + bias correction 0.87/0.85/0.80
    # (the same net with well-ranged channels: 0.84/0.77/0.72 plain int8)
    model = ranged_convnet(seed)
    cal, test = images(100 + seed, 100), images(200 + seed, 500)
    plain = agreement(model, convert(model, INT8, cal), test)

    equalized, outcome = cle(model, cal)
    assert outcome.ran and sorted(outcome.applied) == ["c1", "c2", "dw", "head"]
    assert outcome.details["pairs"] == [["c1", "dw"], ["dw", "c2"], ["c2", "head"]]
    assert not any(type(layer).__name__ == "BatchNormalization" for layer in equalized.layers)
    ref, got = model.predict(test, verbose=0), equalized.predict(test, verbose=0)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()  # the same fp32 function
    assert max(outcome.details["range_ratio_after"].values()) < 0.01 * max(outcome.details["range_ratio_before"].values())
    with_cle = agreement(model, convert(equalized, INT8, cal), test)

    result = pipeline.apply(model, ["cle", "bias-correction"], cal)
    assert result.ran == ["cle", "bias-correction"] and result.folded == {"bn1": "c1", "bn2": "dw"}
    with_both = agreement(model, convert(result.model, INT8, cal), test)
    assert plain < 0.25
    assert with_cle > 0.45 and with_cle > plain + 0.3
    assert with_both > 0.7 and with_both >= with_cle


@pytest.mark.parametrize("seed", [0, 1])
def test_bias_correction_removes_the_mean_shift_of_rounding(seed):
    # measured agreement, seeds 0/1/2: plain 0.878/0.887/0.879 -> 0.977/0.979/0.975; logit error (RMSE / std)
    # 0.41/0.38/0.28 -> 0.07/0.06/0.05
    model = outlier_mlp(seed)
    cal, test = features(100 + seed, 100), features(200 + seed, 1000)
    ref = model.predict(test, verbose=0)
    plain_file = convert(model, INT8, cal)
    corrected, outcome = bias_correction(model, cal)
    assert outcome.ran and outcome.applied == ["hidden", "head"]
    fixed_file = convert(corrected, INT8, cal)

    def error(data):
        return np.sqrt(np.mean((tflite_predict(data, test) - ref) ** 2)) / ref.std()

    assert agreement(model, plain_file, test) < 0.92
    assert agreement(model, fixed_file, test) > 0.95
    assert error(fixed_file) < 0.4 * error(plain_file)
    # only biases moved: the kernels (and so the file's int8 weights) are the original ones
    for name in ("hidden", "head"):
        np.testing.assert_array_equal(corrected.get_layer(name).get_weights()[0], model.get_layer(name).get_weights()[0])
    assert_file_holds_keras_kernels(model, fixed_file, ["hidden", "head"], on_grid=False)  # the same codes


def test_adaround_lowers_layer_error_and_the_file_holds_its_rounding():
    # measured agreement, seeds 0/1/2: plain 0.878/0.887/0.879 -> adaround 0.974/0.978/0.973
    model = outlier_mlp(0)
    cal, test = features(100, 100), features(200, 1000)
    rounded, outcome = adaround(model, cal, steps=300)
    assert outcome.ran and "head" in outcome.applied
    head = outcome.details["layers"]["head"]
    assert head["adaround_error"] < 0.5 * head["nearest_error"]
    # on held-out inputs too: ||W x - W~ x||^2 of the head, learned rounding vs round-to-nearest
    (x,) = common.run(common.input_probe(model, ["head"]), test)
    kernel = model.get_layer("head").get_weights()[0]
    nearest = common.fake_quant("dense", kernel, common.TFLITE_GRID)
    learned = rounded.get_layer("head").get_weights()[0]
    assert np.mean((x @ (learned - kernel)) ** 2) < 0.5 * np.mean((x @ (nearest - kernel)) ** 2)

    data = convert(rounded, INT8, cal)
    assert_file_holds_keras_kernels(rounded, data, ["hidden", "head"])
    assert agreement(model, data, test) > 0.95 > agreement(model, convert(model, INT8, cal), test) + 0.03
    assert agreement(rounded, data, test) > 0.95  # the file agrees with its own Keras model


def test_adaround_after_cle_puts_conv_and_depthwise_weights_exactly_in_the_file():
    model = ranged_convnet(0)
    cal, test = images(100, 100), images(200, 300)
    equalized, _ = cle(model, cal)
    rounded, outcome = adaround(equalized, cal, steps=50)
    assert set(outcome.applied) | set(outcome.skipped) == {"c1", "dw", "c2", "head"}
    for name in ("c1", "dw", "c2", "head"):  # on the grid whether the rounding was learned or nearest
        layer = rounded.get_layer(name)
        kernel = layer.get_weights()[0]
        np.testing.assert_array_equal(common.fake_quant(common.kind_of(layer), kernel, common.TFLITE_GRID), kernel)
    data = convert(rounded, INT8, cal)
    assert_file_holds_keras_kernels(rounded, data, ["c1", "dw", "c2", "head"])
    assert agreement(rounded, data, test) > 0.6


def test_skip_reasons_name_the_layer_and_why():
    cal = tokens(1, 48)
    block = bert_block("gelu")
    result = pipeline.apply(block, ["cle", "bias-correction"], cal)
    by = {o.technique: o for o in result.outcomes}
    by["adaround"] = adaround(block, cal, steps=50)[1]
    # CLE: a GELU between the FFN's Dense layers, residual paths, the head is the output
    assert not by["cle"].ran
    assert "gelu" in by["cle"].skipped["ffn1"] and "does not commute with per-channel scaling" in \
        by["cle"].skipped["ffn1"]
    assert "res2 (Add) merges it with other inputs" in by["cle"].skipped["ffn2"]
    assert "model output" in by["cle"].skipped["cls"]
    assert by["cle"].skipped["attn"].startswith("MultiHeadAttention: the weight algorithms handle")
    # bias correction: the bias-free head
    assert by["bias-correction"].applied == ["ffn1", "ffn2"]
    assert "no bias to correct (use_bias=False)" in by["bias-correction"].skipped["cls"]
    assert "ln1" in by["adaround"].skipped and by["adaround"].ran
    notes = "\n".join(result.notes())
    assert "warning: cle: no layer supports it" in notes and "attn (MultiHeadAttention)" in notes
    # compress preflight's columns say the same without running anything
    rows = {row.layer: row.verdicts for row in preflight(block)}
    assert rows["ffn1"]["cle"] == by["cle"].skipped["ffn1"] and rows["ffn1"]["adaround"] is None
    assert "no bias to correct" in rows["cls"]["bias-correction"] and rows["cls"]["adaround"] is None

    # with ReLU in the FFN the pair is equalized (3-D Dense inputs), the rest keeps its reasons
    relu = bert_block("relu")
    equalized, outcome = cle(relu, cal)
    assert outcome.details["pairs"] == [["ffn1", "ffn2"]]
    np.testing.assert_allclose(equalized.predict(cal, verbose=0), relu.predict(cal, verbose=0), rtol=1e-4, atol=1e-5)

    # ReLU6 clips: scaling would move the clip
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu6", name="a")(inp)
    x = keras.layers.Conv2D(8, 3, name="b")(x)
    x = keras.layers.Activation("tanh", name="t")(x)
    out = keras.layers.Conv2D(4, 1, name="c")(x)
    _, outcome = cle(keras.Model(inp, out), images(0, 8)[:, :8, :8])
    assert "ReLU6 clips at 6" in outcome.skipped["a"]
    assert "t applies tanh" in outcome.skipped["b"]


def test_sequential_and_unfoldable_batch_norms():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.BatchNormalization(name="bn_in"),
                              keras.layers.Dense(16, name="d1"), keras.layers.BatchNormalization(name="bn1"),
                              keras.layers.ReLU(), keras.layers.Dense(3, name="d2")])
    model.get_layer("bn1").set_weights([np.full(16, 2.0), np.full(16, 0.1), np.full(16, 0.3), np.full(16, 4.0)])
    x = features(0, 64)[:, :10]
    result = pipeline.apply(model, ["cle", "bias-correction"], x)
    assert result.folded == {"bn1": "d1"}
    assert "it normalizes the model's input" in result.outcomes[0].skipped["bn_in"]
    assert result.outcomes[0].details["pairs"] == [["d1", "d2"]]
    assert [type(layer).__name__ for layer in result.model.layers] == ["BatchNormalization", "Dense", "ReLU", "Dense"]
    np.testing.assert_allclose(pipeline.apply(model, ["cle"], x).model.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def _user_files(tmp_path, n=600):
    model = outlier_mlp(0)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(tmp_path / "mlp.keras")
    x = features(7, n)
    np.savez(tmp_path / "data.npz", x=x, y=model.predict(x, verbose=0).argmax(1))
    return tmp_path / "mlp.keras", tmp_path / "data.npz"


def test_quantize_and_export_clis_run_them_and_the_sidecar_says_which(cli, tmp_path):
    model, data = _user_files(tmp_path)
    plain = tmp_path / "plain.tflite"
    res = cli("compress", "quantize", model, "--format", "tflite", "--mode", "int8", "--data", data, "--max-drop", "1",
              "-o", plain)
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "algos.tflite"
    res = cli("compress", "quantize", model, "--format", "tflite", "--mode", "int8", "--data", data, "--max-drop",
              "1", "--weight-algos", "bias-correction,cle", "-o", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cle: applied to 2 layer(s)" in res.stdout and "bias-correction: applied to 2 layer(s)" in res.stdout
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["chain"] == ["cle", "bias-correction", "tflite(int8)"]
    assert meta["weight_algos"]["ran"] == ["cle", "bias-correction"]
    assert meta["weight_algos"]["outcomes"][0]["details"]["pairs"] == [["hidden", "head"]]
    before = json.loads(Path(f"{plain}.json").read_text())["validation"]
    after = meta["validation"]
    assert after["metric_source"] == before["metric_source"] == 1.0  # compared with the original model
    assert after["metric_export"] > before["metric_export"] + 0.04

    out = tmp_path / "ada.tflite"
    res = cli("export", "tflite", model, "--quantize", "int8", "--data", data, "--max-drop", "1", "--weight-algos",
              "adaround", "-o", out)
    assert res.returncode == 0, res.stdout + res.stderr
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["chain"] == ["adaround", "tflite(int8)"] and meta["weight_algos"]["ran"] == ["adaround"]

    res = cli("export", "tflite", model, "--weight-algos", "cle", "-o", tmp_path / "fp32.tflite")
    assert res.returncode != 0 and "need int8 or 16x8, not tflite fp32" in res.stdout + res.stderr
    res = cli("compress", "quantize", model, "--format", "onnx", "--mode", "int8", "--weight-algos", "cle,foo")
    assert res.returncode != 0 and "unknown weight algorithm 'foo'" in res.stdout + res.stderr


@pytest.mark.parametrize("flavour", ["qdq-s8s8", "qop-u8s8"])
def test_onnx_int8_holds_adaround_weights(flavour):
    cal = features(100, 100)
    rounded, outcome = adaround(outlier_mlp(0), cal, steps=100)
    assert outcome.ran
    proto = onnx.load_from_string(onnx_convert(rounded, QuantRecipe("onnx", "int8", onnx_int8=flavour), cal))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for name in ("hidden", "head"):
        (codes,) = [n for n in inits if f"/{name}/" in n and n.endswith("_quantized") and inits[n].ndim == 2]
        kernel = rounded.get_layer(name).get_weights()[0]
        scale = inits[f"{codes}_scale"] if f"{codes}_scale" in inits else inits[codes[: -len("quantized")] + "scale"]
        assert np.array_equal(np.round(kernel / scale), inits[codes]), name
        np.testing.assert_allclose(inits[codes] * scale, kernel, rtol=1e-6, atol=0, err_msg=name)


def test_keras3_models_take_the_same_code():
    k3 = keras3()
    k3.utils.set_random_seed(0)
    inp = k3.Input((8, 8, 3))
    x = k3.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = k3.layers.BatchNormalization(name="bn1")(x)
    x = k3.layers.ReLU()(x)
    x = k3.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = k3.layers.ReLU()(x)
    x = k3.layers.GlobalAveragePooling2D()(x)
    model = k3.Model(inp, k3.layers.Dense(4, name="head")(x))
    rng = np.random.default_rng(0)
    model.get_layer("bn1").set_weights([rng.uniform(.5, 2, 8) * np.logspace(-2, 2, 8), rng.normal(0, .3, 8),
                                        rng.normal(0, .1, 8), rng.uniform(.5, 2, 8)])
    x = images(0, 32)[:, :8, :8]
    result = pipeline.apply(model, ["cle", "adaround", "bias-correction"], x)
    assert result.folded == {"bn1": "c1"} and result.ran == ["cle", "adaround", "bias-correction"]
    assert type(result.model).__module__.startswith("keras.")  # still a Keras 3 model
    assert result.outcomes[0].details["pairs"] == [["c1", "dw"], ["dw", "head"]]
    assert result.outcomes[0].details["fp32_max_relative_change"] < 1e-4
    kernel = result.model.get_layer("dw").get_weights()[0]
    np.testing.assert_array_equal(common.fake_quant("depthwise", kernel, common.TFLITE_GRID), kernel)
