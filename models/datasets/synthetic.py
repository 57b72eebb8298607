"""Inputs for a model that came without data, shaped by what the model itself declares.

A model whose first layer is ``Rescaling(1/255)`` expects pixels in [0, 255]; one that starts with a
``Normalization`` layer expects raw features around its stored mean; an ``Embedding`` expects token ids below
its vocabulary size. Standard normals (and zeros for integers) would calibrate int8 on values the model never
sees, so each input is drawn from the range its first layer declares.
"""
from __future__ import annotations

import numpy as np


def first_layer(model, input_name: str):
    """The layer that consumes the model input ``input_name`` (None if it cannot be told)."""
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            inputs = layer.input
        except (AttributeError, ValueError, RuntimeError):  # a layer called more than once, or not connected
            continue
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if any(getattr(t, "name", "").split(":")[0] == input_name for t in inputs):
            return layer
    return model.layers[0] if model.layers and len(model.inputs) == 1 else None


def describe_range(model, sig) -> str:
    """What range the synthetic values for the input ``sig`` follow (said in the output)."""
    shape = (1,) + tuple(d or 1 for d in sig.shape)
    return _draw(model, sig.name, shape, np.random.default_rng(0), sig.dtype)[1]


def _draw(model, input_name, shape, rng, dtype) -> tuple[np.ndarray, str]:
    layer = first_layer(model, input_name)
    kind = type(layer).__name__ if layer is not None else ""
    if kind == "Embedding" or np.dtype(dtype).kind in "iu":
        high = int(getattr(layer, "input_dim", 0) or 0) if kind == "Embedding" else 0
        if high:
            return rng.integers(0, high, shape).astype(dtype), f"token ids in [0, {high}) (Embedding vocabulary)"
        return rng.integers(0, 2, shape).astype(dtype), "integers in {0, 1} (no vocabulary declared)"
    if kind == "Rescaling":
        scale = np.asarray(layer.scale, np.float32)
        offset = np.asarray(layer.offset, np.float32)
        unit = rng.random(shape, np.float32)  # what the model works on after rescaling: [0, 1]
        lo, hi = (0.0, 1.0) if float(np.min(offset)) >= 0 else (-1.0, 1.0)
        raw = ((lo + (hi - lo) * unit) - offset) / np.where(scale == 0, 1, scale)
        return raw.astype(dtype), f"raw values mapped by Rescaling(scale={float(np.ravel(scale)[0]):g}) to [{lo:g}, {hi:g}]"
    if kind == "Normalization" and getattr(layer, "mean", None) is not None:
        mean = np.asarray(layer.mean, np.float32)
        std = np.sqrt(np.maximum(np.asarray(layer.variance, np.float32), 1e-12))
        mean = np.broadcast_to(mean.reshape(mean.shape[-1:] if mean.ndim else ()), shape[-1:]) if mean.size > 1 else mean
        std = np.broadcast_to(std.reshape(std.shape[-1:] if std.ndim else ()), shape[-1:]) if std.size > 1 else std
        return (mean + std * rng.standard_normal(shape)).astype(dtype), \
            "raw features drawn around the Normalization layer's stored mean and variance"
    return rng.standard_normal(shape).astype(dtype), "standard normal values (the model declares no input range)"


def synthetic_inputs(model, signature, n: int, seed: int = 0):
    """``n`` inputs per the model's declared ranges (see module docstring); an array, or a dict by input name."""
    rng = np.random.default_rng(seed)
    out = {}
    for sig in signature:
        shape = (n,) + tuple(d or 1 for d in sig.shape)
        out[sig.name] = _draw(model, sig.name, shape, rng, sig.dtype)[0]
    return out[signature[0].name] if len(signature) == 1 else out
