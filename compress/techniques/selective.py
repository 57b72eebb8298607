"""Selective application: clone a model with a per-layer function, wrapping only the layers a technique supports.

The caller's model is never touched: it is copied first (fresh layers, same weights), and wrappers are
put around the copy's built layers, so tfmot wrappers start from the trained weights.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from models.backend import keras

from compress.techniques.outcome import Outcome


def copy_model(model):
    """A structurally identical model with its own layers and the same weights (custom layers via from_config)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def has_weights(layer) -> bool:
    return bool(layer.weights)


def wrap_layers(model, outcome: Outcome, support: Callable[[object], str | None], wrap: Callable[[object], object],
                copy: bool = True):
    """Clone ``model`` wrapping every layer with ``support(layer) is None``; record the rest with their reason.

    Layers without weights are neither applied nor skipped (nothing to compress); nested models are skipped
    with a reason (tfmot wraps layers, not sub-models).
    """
    base = copy_model(model) if copy else model

    def fn(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.Model):
            if has_weights(layer):
                outcome.skipped[layer.name] = "a nested model: wrappers go around layers (flatten the model first)"
            return layer
        reason = support(layer)
        if reason is None:
            outcome.applied.append(layer.name)
            return wrap(layer)
        if has_weights(layer):
            outcome.skipped[layer.name] = reason
        return layer

    return keras.models.clone_model(base, clone_function=fn)


def kernel_weights(layer) -> list:
    """The multiplicative weights of a layer (kernels, embedding tables), by tf_keras' naming."""
    return [w for w in layer.trainable_weights
            if w.name.split("/")[-1].split(":")[0] in ("kernel", "recurrent_kernel", "embeddings", "depthwise_kernel",
                                                     "pointwise_kernel")]


def kernels_by_layer(model, layers: list[str] | None = None):
    """(layer name, kernels) for every layer with kernels, or only for ``layers``."""
    for layer in model.layers:
        if layers is None or layer.name in layers:
            kernels = kernel_weights(layer)
            if kernels:
                yield layer.name, kernels


def non_finite_reason(model) -> str | None:
    """A whole-model reason when the weights are NaN/inf (a diverged training run): nothing sound to compress."""
    for w in model.weights:
        value = np.asarray(w.numpy())
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"the model's weights are not finite (NaN/inf in {w.name.split(':')[0]}): its training diverged"
    return None


def start_outcome(model, technique: str) -> Outcome:
    """A technique's Outcome, blocked from the start when the model's weights are not finite."""
    return Outcome(technique, blocked=non_finite_reason(model))


def rebuild(model):
    """A fresh copy whose layers are built from their configs, weights matched by variable name.

    tfmot's strip functions can leave layers whose variables are tracked in another order, or not at all
    (a clustered MultiHeadAttention then fails to save/load); a rebuilt model saves and loads like the
    original.
    """
    fresh = keras.models.clone_model(model)
    for old, new in zip(model.layers, fresh.layers):
        if new.weights:
            new.set_weights(_match_weights(old, new))
    return fresh


def _relative(layer, weight) -> str:
    name = weight.name.split(":")[0]
    return name[len(layer.name) + 1:] if name.startswith(layer.name + "/") else name


def _match_weights(old, new) -> list:
    """``old``'s weight values in ``new``'s order: by name relative to the layer, else by last name part + shape."""
    by_rel = {_relative(old, w): w for w in old.weights}
    used, values = set(), []
    for w in new.weights:
        match = by_rel.get(_relative(new, w))
        if match is None or id(match) in used:
            last = w.name.split(":")[0].split("/")[-1]
            match = next((o for o in old.weights if id(o) not in used and o.name.split(":")[0].split("/")[-1] == last
                          and tuple(o.shape) == tuple(w.shape)), None)
        if match is None:
            raise ValueError(f"cannot rebuild {new.name}: no weight like {w.name} in the stripped layer")
        used.add(id(match))
        values.append(match.numpy())
    return values
