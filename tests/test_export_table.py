"""Every Keras activation and common layer exports to TFLite and ONNX with parity, from tf_keras and Keras 3 files.

One small model per cell, saved to a file and loaded the way a user's file is (a Keras 3 file through the
bridge). A cell passes when both formats are written and match Keras within tolerance; ``python -m pytest
tests/test_export_table.py -s`` prints the table.
"""
from __future__ import annotations

import numpy as np
import pytest

ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "selu", "elu", "exponential",
               "hard_sigmoid", "swish", "silu", "gelu", "mish", "relu6", "leaky_relu", "hard_silu", "log_softmax",
               "linear"]
LAYERS = ["Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "LayerNormalization",
          "MultiHeadAttention", "GRU", "LSTM", "Bidirectional", "Embedding", "UpSampling2D", "Resizing", "Rescaling",
          "Normalization", "BatchNormalization"]
FLAVOURS = ["tf_keras", "keras3"]
TABLE: dict[tuple[str, str], str] = {}


def _keras(flavour):
    if flavour == "keras3":
        import keras

        return keras
    from models.backend import keras

    return keras


def _has_activation(k, name) -> bool:
    try:
        return k.activations.get(name) is not None
    except (ValueError, AttributeError):
        return False


def _layer_model(k, name):
    L = k.layers
    rng = np.random.default_rng(0)
    if name in ("Conv1D", "GRU", "LSTM", "Bidirectional", "LayerNormalization", "MultiHeadAttention"):
        x = k.Input((6, 4))
        if name == "Conv1D":
            y = L.Conv1D(3, 3)(x)
        elif name == "GRU":
            y = L.GRU(5)(x)
        elif name == "LSTM":
            y = L.LSTM(5)(x)
        elif name == "Bidirectional":
            y = L.Bidirectional(L.LSTM(3, return_sequences=True))(x)
        elif name == "LayerNormalization":
            y = L.LayerNormalization()(L.Dense(4)(x))
        else:
            y = L.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
        return k.Model(x, y), rng.standard_normal((8, 6, 4)).astype("float32")
    if name == "Embedding":
        x = k.Input((5,), dtype="int32")
        return k.Model(x, L.Embedding(20, 3)(x)), rng.integers(0, 20, (8, 5)).astype("int32")
    x = k.Input((8, 8, 3))
    make = {"Conv2D": lambda: L.Conv2D(4, 3), "DepthwiseConv2D": lambda: L.DepthwiseConv2D(3),
            "SeparableConv2D": lambda: L.SeparableConv2D(4, 3), "Conv2DTranspose": lambda: L.Conv2DTranspose(2, 3),
            "UpSampling2D": lambda: L.UpSampling2D(), "Resizing": lambda: L.Resizing(4, 4),
            "Rescaling": lambda: L.Rescaling(1 / 255.0, offset=-0.5), "BatchNormalization": L.BatchNormalization}
    if name == "Normalization":
        layer = L.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 1.0, 0.25])
    else:
        layer = make[name]()
    model = k.Model(x, layer(x))
    if name == "BatchNormalization":  # non-trivial moving statistics
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([gamma * 1.5, beta + 0.1, mean + 0.3, var * 2.0])
    return model, (rng.random((8, 8, 8, 3)) * (255 if name == "Rescaling" else 1)).astype("float32")


def _activation_model(k, name):
    x = k.Input((6,))
    y = k.layers.Dense(5, activation=name)(k.layers.Dense(6)(x))
    return k.Model(x, y), np.random.default_rng(0).standard_normal((8, 6)).astype("float32") * 2


def _export_both(tmp_path, flavour, model, x) -> str:
    """'ok' or the reason a format could not take the model (the first one that fails)."""
    from export.quantize.ptq import QuantRecipe
    from export.exporter import export
    from models.subject import resolve

    path, data = tmp_path / "model.keras", tmp_path / "data.npz"
    model.save(path)
    np.savez(data, x=x)  # inputs only: parity, no metric
    subject = resolve(str(path), data=str(data))
    reasons = []
    for fmt in ("tflite", "onnx"):
        result = export(subject, QuantRecipe(fmt, "fp32"), tmp_path / f"m.{fmt}")
        if not result.written:
            reasons.append(f"{fmt}: {result.validation.failure()}")
    return "ok" if not reasons else "; ".join(reasons)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_exports_with_parity(tmp_path, flavour, activation):
    k = _keras(flavour)
    if not _has_activation(k, activation):
        TABLE[(activation, flavour)] = f"not offered by {flavour}"
        return
    model, x = _activation_model(k, activation)
    TABLE[(activation, flavour)] = outcome = _export_both(tmp_path, flavour, model, x)
    assert outcome == "ok", outcome


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("layer", LAYERS)
def test_layer_exports_with_parity(tmp_path, flavour, layer):
    model, x = _layer_model(_keras(flavour), layer)
    TABLE[(layer, flavour)] = outcome = _export_both(tmp_path, flavour, model, x)
    assert outcome == "ok", outcome


def teardown_module(module):
    if TABLE:
        print("\n| cell | " + " | ".join(FLAVOURS) + " |\n|---|" + "---|" * len(FLAVOURS))
        for cell in dict.fromkeys(c for c, _ in TABLE):
            print(f"| {cell} | " + " | ".join(TABLE.get((cell, f), "") for f in FLAVOURS) + " |")
