"""Per-class compression configs for layers tfmot does not know: the zoo's custom layers and built-ins it leaves out.

Each entry says, for one layer class, which weights are multiplicative kernels (pruning, clustering, 2:4)
and how the layer quantizes in QAT, or why it must not. Registration goes through tfmot's own extension
points (the prune/cluster registries' per-class weight maps, and ``QuantizeConfig`` objects passed to
``quantize_annotate_layer``), so tfmot's wrappers, schedules and ``strip_*`` work unchanged on these layers.

Soundness rules used here:

- a weight is pruned/clustered only if it multiplies the input (``kernel``-like); additive tables
  (biases, learned position embeddings) are left alone, as tfmot does for biases;
- QAT quantizes kernels per tensor and the layer's output (or activation) with tfmot's 8-bit quantizers,
  exactly as tfmot's Dense config does, only where the layer's math is ``activation(matmul(...) + b)``
  or a pure pass-through of quantization parameters (max pooling).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from models import registry as _zoo
from models.backend import keras, quiet_stderr

with quiet_stderr():
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import ClusteringRegistry
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as q8_configs,
        default_8bit_quantize_registry as q8_registry,
    )
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry


@dataclass(frozen=True)
class LayerConfig:
    """How one (custom or tfmot-unsupported) layer class takes each technique; a reason where it does not."""

    #: weights that multiply the input: pruned and clustered (tfmot registry weight names)
    kernels: tuple[str, ...] = ()
    #: why the layer is not pruned/clustered (when ``kernels`` is empty)
    no_kernels_reason: str = ""
    #: "kernel+activation" | "output" | "passthrough" | "" (not quantized in QAT)
    qat: str = ""
    no_qat_reason: str = ""
    #: channel pruning: config key of the output width, and the axes of each weight (in, out); None: not prunable
    units_key: str | None = None
    channel_weights: tuple[tuple[str, int | None, int | None], ...] = ()


_CONFIGS: dict[type, LayerConfig] = {}


def _zoo_class(module: str, name: str):
    try:
        return getattr(importlib.import_module(f"models.zoo.{module}"), name)
    except (ImportError, AttributeError):  # the zoo changed: the layer simply has no config
        return None


def _register_defaults() -> None:
    _zoo.names()  # import the zoo (custom layer classes)
    graph_conv = _zoo_class("structured.gnn", "GraphConv")
    if graph_conv is not None:
        # A_hat @ (X @ W) + b: W multiplies the features like a Dense kernel; each output unit is independent.
        _CONFIGS[graph_conv] = LayerConfig(
            kernels=("kernel",), qat="kernel+activation", units_key="units",
            channel_weights=(("kernel", -2, -1), ("bias", None, 0)))
    position = _zoo_class("sequence.transformer", "PositionEmbedding")
    if position is not None:
        _CONFIGS[position] = LayerConfig(
            no_kernels_reason="PositionEmbedding adds a learned (length, dim) table to its input (an additive "
                              "bias, not a kernel): pruning or clustering it would move every position's code",
            qat="output")
    # Built-ins that tfmot's default 8-bit registry leaves out although their math is Dense/Conv2D-like.
    _CONFIGS[keras.layers.Conv1D] = LayerConfig(kernels=("kernel",), qat="kernel+activation")
    _CONFIGS[keras.layers.MaxPooling1D] = LayerConfig(qat="passthrough")
    _CONFIGS[keras.layers.GlobalMaxPooling1D] = LayerConfig(qat="passthrough")
    for cls, weights in ((graph_conv, ("kernel",)),):
        if cls is not None:
            PruneRegistry._LAYERS_WEIGHTS_MAP.setdefault(cls, list(weights))
            ClusteringRegistry._LAYERS_WEIGHTS_MAP.setdefault(cls, list(weights))


def config_for(layer) -> LayerConfig | None:
    return _CONFIGS.get(type(layer))


def no_weights_reason(layer) -> str | None:
    """Why no weight technique applies to ``layer`` at all (nothing trainable, or a custom layer whose weights
    are not kernels), else None."""
    if not layer.trainable_weights:
        return "no trainable weights"
    cfg = config_for(layer)
    if cfg is not None and not cfg.kernels and cfg.no_kernels_reason:
        return cfg.no_kernels_reason
    return None


def register(cls: type, config: LayerConfig) -> None:
    """Give a user's custom layer class a compression config (kernels are also registered with tfmot)."""
    _CONFIGS[cls] = config
    if config.kernels:
        PruneRegistry._LAYERS_WEIGHTS_MAP[cls] = list(config.kernels)
        ClusteringRegistry._LAYERS_WEIGHTS_MAP[cls] = list(config.kernels)


def is_custom(layer) -> bool:
    """A layer class that is neither tf_keras' nor tfmot's own."""
    module = type(layer).__module__ or ""
    return not (module.startswith("tf_keras") or module.startswith("keras") or
                module.startswith("tensorflow"))


def quantize_config(layer):
    """A tfmot QuantizeConfig for a layer the default 8-bit registry refuses, or None."""
    cfg = config_for(layer)
    if cfg is None or not cfg.qat:
        return None
    if cfg.qat == "kernel+activation":
        return q8_registry.Default8BitQuantizeConfig(list(cfg.kernels), ["activation"], False)
    if cfg.qat == "output":
        return q8_registry.Default8BitQuantizeConfig([], [], True)
    if cfg.qat == "passthrough":
        return q8_configs.NoOpQuantizeConfig()
    raise ValueError(f"unknown qat kind {cfg.qat!r}")


def quantize_scope():
    """tfmot's quantize scope plus every custom layer class of the zoo (for cloning and loading QAT models)."""
    objects = {cls.__name__: cls for cls in _CONFIGS}
    return tfmot.quantization.keras.quantize_scope(objects)


_register_defaults()
