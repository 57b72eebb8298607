"""Channel (filter) pruning with a real speedup: remove whole Conv filters / Dense units / LSTM units, rebuild a
smaller model, copy the surviving weights, fine-tune.

A layer's output channels can go only if every path from its output reaches layers that can drop the same
input channels (Conv/Dense/LSTM/GraphConv kernels), through layers that act per channel (activations,
pooling, dropout, BatchNormalization, padding, Flatten, Concatenate). A path that reaches an element-wise
merge (a residual Add), attention, a normalisation across channels, a reshape, a custom layer without a
channel config, or the model's outputs blocks it; the blocker is named in the layer's reason.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.backend import keras, tf

from compress.techniques import custom
from compress.techniques.finetune import as_finetune
from compress.techniques.selective import start_outcome

CRITERIA = ("l1", "l2")

#: layers that act on each channel independently (output channel c depends only on input channel c)
_PER_CHANNEL = (
    keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
    keras.layers.ThresholdedReLU, keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D, keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.UpSampling1D, keras.layers.UpSampling2D,
    keras.layers.BatchNormalization,
)
_MERGE = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
          keras.layers.Maximum, keras.layers.Minimum)
_RNN = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


@dataclass
class _Graph:
    model: object
    layers: dict  # layer name -> layer (input layers included, which Sequential.layers omits)
    producers: dict  # layer name -> list of producer layer names (call order)
    consumers: dict  # layer name -> list of (consumer name, input position)
    outputs: set
    order: list  # topological


def _graph(model) -> _Graph:
    producers, consumers, order, layers = {}, {}, [], {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            name = node.layer.name
            layers[name] = node.layer
            inbound = [layer.name for layer in tf.nest.flatten(node.inbound_layers)]
            producers[name] = inbound
            order.append(name)
            for pos, src in enumerate(inbound):
                consumers.setdefault(src, []).append((name, pos))
    return _Graph(model, layers, producers, consumers, {layer.name for layer in model._output_layers}, order)


def _is_channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _producer_kind(layer) -> str | None:
    """How a layer's output width is set: 'conv'/'dense'/'rnn'/'embedding'/'custom', or None (not a producer)."""
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)) and not isinstance(
            layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D,
                    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return "conv"
    if type(layer) is keras.layers.Dense:
        return "dense"
    if type(layer) in _RNN:
        return "rnn"
    if type(layer) is keras.layers.Embedding:
        return "embedding"
    cfg = custom.config_for(layer)
    if cfg is not None and cfg.units_key:
        return "custom"
    return None


def _absorbs(layer, position: int) -> bool:
    """Can this layer drop input channels (slice its kernel's input axis) at this input position?"""
    if isinstance(layer, keras.layers.Conv2D) and _producer_kind(layer) == "conv":
        return _is_channels_last(layer) and getattr(layer, "groups", 1) == 1
    if isinstance(layer, keras.layers.Conv1D) and _producer_kind(layer) == "conv":
        return _is_channels_last(layer) and getattr(layer, "groups", 1) == 1
    if type(layer) is keras.layers.Dense or type(layer) in _RNN:
        return True
    cfg = custom.config_for(layer)
    return cfg is not None and cfg.units_key is not None and position == 0


def _blocker(layer, position: int, graph: _Graph) -> str | None:
    """Why channels cannot flow into this consumer, or None if it absorbs them or passes them through."""
    name, cls = layer.name, type(layer).__name__
    if len(layer._inbound_nodes) > 1:
        return f"feeds {name}, a layer shared by several calls"
    if _absorbs(layer, position):
        return None
    if isinstance(layer, _PER_CHANNEL) or isinstance(layer, (keras.layers.Flatten, keras.layers.Concatenate)):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.axis not in ([-1], -1, [len(layer.input_shape) - 1]):
            return f"feeds {name} (BatchNormalization over a non-channel axis)"
        if isinstance(layer, keras.layers.Concatenate) and layer.axis not in (-1, len(layer.output_shape) - 1):
            return f"feeds {name} (Concatenate along a non-channel axis)"
        if isinstance(layer, keras.layers.Activation) and layer.get_config().get("activation") == "softmax":
            return f"feeds {name}, a softmax across channels"
        if not _is_channels_last(layer):
            return f"feeds {name} ({cls}, channels_first)"
        return None
    if isinstance(layer, _MERGE):
        return f"feeds {name} ({cls}), an element-wise merge (residual add): its channels must match the other branch"
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return f"feeds {name} (MultiHeadAttention): attention projections and their residual fix the width"
    if isinstance(layer, keras.layers.LayerNormalization):
        return f"feeds {name} (LayerNormalization), which normalises across channels"
    if isinstance(layer, (keras.layers.Reshape, keras.layers.Permute)):
        return f"feeds {name} ({cls}), which reinterprets the channel axis"
    if isinstance(layer, keras.layers.Softmax):
        return f"feeds {name}, a softmax across channels"
    if custom.is_custom(layer):
        return f"feeds {name} (custom layer {cls} without a channel config)"
    return f"feeds {name} ({cls}), which cannot drop input channels"


def _check(graph: _Graph, start: str) -> str | None:
    """Walk every path from ``start``'s output; None if all end in absorbing layers, else the first blocker."""
    stack, seen = [start], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in graph.outputs:
            return ("its outputs are the model's outputs (their width is the model's contract)" if name == start else
                    f"its channels reach the model's output through {name}")
        for consumer, pos in graph.consumers.get(name, []):
            layer = graph.layers[consumer]
            reason = _blocker(layer, pos, graph)
            if reason:
                return reason
            if not _absorbs(layer, pos):
                stack.append(consumer)
    return None


def channel_support(layer, graph: _Graph) -> str | None:
    """None if this layer's output channels can be removed, else the reason."""
    kind = _producer_kind(layer)
    cls = type(layer).__name__
    if kind is None:
        if isinstance(layer, keras.layers.MultiHeadAttention):
            return "attention heads are not pruned (head pruning needs per-head importance and a residual-free output)"
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
            return f"{cls} has no filters of its own (it follows its input's channels)"
        cfg = custom.config_for(layer)
        if cfg is not None:
            return f"{cls} has no units of its own to remove"
        if custom.is_custom(layer):
            return f"custom layer {cls} has no channel config (units key and weight axes)"
        return f"{cls} has no filters/units to remove"
    if len(layer._inbound_nodes) > 1:
        return "a shared layer (called more than once)"
    if kind == "conv" and (not _is_channels_last(layer) or getattr(layer, "groups", 1) != 1):
        return "grouped or channels_first convolution"
    if kind == "rnn" and (getattr(layer, "return_state", False) or getattr(layer, "go_backwards", False)):
        return "recurrent layer returning states"
    width = _width(layer)
    if width < 2:
        return f"only {width} output channel"
    return _check(graph, layer.name)


def _width(layer) -> int:
    kind = _producer_kind(layer)
    if kind == "conv":
        return int(layer.filters)
    if kind == "embedding":
        return int(layer.output_dim)
    if kind == "custom":
        return int(getattr(layer, custom.config_for(layer).units_key))
    return int(layer.units)


def _importance(layer, criterion: str) -> np.ndarray:
    """Per output channel: L1 (or L2) norm of the weights that produce it."""
    kind = _producer_kind(layer)
    weights = layer.get_weights()
    norm = (lambda a, axis: np.abs(a).sum(axis)) if criterion == "l1" else (lambda a, axis: np.sqrt((a ** 2).sum(axis)))
    if kind == "embedding":
        return norm(weights[0], 0)
    if kind == "rnn":
        gates, units = _GATES[type(layer).__name__], int(layer.units)
        kernel, recurrent = weights[0], weights[1]
        score = np.zeros(units)
        for g in range(gates):
            cols = slice(g * units, (g + 1) * units)
            score += norm(kernel[:, cols], 0) + norm(recurrent[:, cols], 0)
        return score
    kernel = weights[0]
    return norm(kernel.reshape(-1, kernel.shape[-1]), 0)


def _expand_gates(keep: np.ndarray, layer) -> np.ndarray:
    gates, units = _GATES[type(layer).__name__], int(layer.units)
    return np.concatenate([keep + g * units for g in range(gates)])


def _out_masks(graph: _Graph, keep: dict) -> dict:
    """The kept-channel mask of every layer output touched by pruning (None: all channels kept)."""
    masks: dict = {}
    for name in graph.order:
        layer = graph.layers[name]
        if name in keep:
            mask = np.zeros(_width(layer), bool)
            mask[keep[name]] = True
            masks[name] = mask
            continue
        ins = graph.producers.get(name, [])
        in_masks = [masks.get(src) for src in ins]
        if not any(m is not None for m in in_masks) or _absorbs(layer, 0):
            masks[name] = None
            continue
        if isinstance(layer, keras.layers.Concatenate):
            parts = []
            for src, m in zip(ins, in_masks):
                width = int(graph.layers[src].output_shape[-1])
                parts.append(m if m is not None else np.ones(width, bool))
            masks[name] = np.concatenate(parts)
        elif isinstance(layer, keras.layers.Flatten):
            shape = layer.input_shape
            spatial = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            masks[name] = np.tile(in_masks[0], spatial)
        else:
            masks[name] = in_masks[0]
    return masks


def _slice_weights(layer, new_layer, in_mask, out_keep) -> list:
    """The original layer's weights cut to the kept input channels (``in_mask``) and output channels."""
    weights = layer.get_weights()
    kind = _producer_kind(layer)
    if isinstance(layer, keras.layers.BatchNormalization):
        return [w[in_mask] if in_mask is not None else w for w in weights]
    if kind == "rnn":
        kernel, recurrent, *rest = weights
        if in_mask is not None:
            kernel = kernel[in_mask]
        if out_keep is not None:
            cols = _expand_gates(out_keep, layer)
            kernel, recurrent = kernel[:, cols], recurrent[out_keep][:, cols]
            rest = [b[..., cols] for b in rest]
        return [kernel, recurrent, *rest]
    if kind == "embedding":
        return [weights[0][:, out_keep]] if out_keep is not None else weights
    if kind == "custom":
        cfg = custom.config_for(layer)
        out = []
        by_name = {w.name.split("/")[-1].split(":")[0]: v for w, v in zip(layer.weights, weights)}
        for wname, in_axis, out_axis in cfg.channel_weights:
            value = by_name[wname]
            if in_mask is not None and in_axis is not None:
                value = np.compress(in_mask, value, axis=in_axis)
            if out_keep is not None and out_axis is not None:
                value = np.take(value, out_keep, axis=out_axis)
            out.append(value)
        return out
    if kind in ("conv", "dense"):
        kernel, *rest = weights
        if in_mask is not None:
            kernel = np.compress(in_mask, kernel, axis=-2)
        if out_keep is not None:
            kernel = kernel[..., out_keep]
            rest = [b[out_keep] for b in rest]
        return [kernel, *rest]
    return weights


def channel_prune(model, train=None, loss=None, *, ratio: float = 0.5, criterion: str = "l1", epochs: int = 1,
                  batch_size: int = 32, lr: float = 1e-3):
    """Remove ``ratio`` of the output channels of every prunable layer (lowest ``criterion`` norm first), rebuild
    a smaller model with the surviving weights, and fine-tune it; returns (smaller model, Outcome)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    tune = as_finetune(train, loss, epochs=epochs, batch_size=batch_size, lr=lr)
    outcome = start_outcome(model, "channel prune")
    if outcome.blocked:
        return model, outcome
    if not getattr(model, "_is_graph_network", False):
        outcome.blocked = "a subclassed model: its graph cannot be rebuilt from a config"
        return model, outcome
    graph = _graph(model)
    keep = {}
    widths = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or not layer.weights:
            continue
        reason = channel_support(layer, graph)
        if reason is not None:
            outcome.skipped[layer.name] = reason
            continue
        n = _width(layer)
        n_keep = max(1, int(round(n * (1.0 - ratio))))
        scores = _importance(layer, criterion)
        keep[layer.name] = np.sort(np.argsort(-scores, kind="stable")[:n_keep])
        widths[layer.name] = (n, n_keep)
        outcome.applied.append(layer.name)
    if not outcome.ran:
        return model, outcome
    masks = _out_masks(graph, keep)
    config = model.get_config()
    for layer_cfg in config["layers"]:
        layer_cfg.pop("build_config", None)  # rebuild every layer from its (new) input shape
        name = layer_cfg["config"].get("name")
        if name in keep:
            layer = model.get_layer(name)
            key = {"conv": "filters", "dense": "units", "rnn": "units", "embedding": "output_dim"}.get(
                _producer_kind(layer)) or custom.config_for(layer).units_key
            layer_cfg["config"][key] = int(len(keep[name]))
    rebuilt = model.__class__.from_config(config)
    adjusted = []
    for layer in model.layers:
        if not layer.weights:
            continue
        ins = graph.producers.get(layer.name, [])
        in_mask = masks.get(ins[0]) if ins else None
        out_keep = keep.get(layer.name)
        if in_mask is not None and in_mask.all():
            in_mask = None
        new_layer = rebuilt.get_layer(layer.name)
        new_layer.set_weights(_slice_weights(layer, new_layer, in_mask, out_keep))
        if in_mask is not None and layer.name not in keep:
            adjusted.append(layer.name)
    if tune.enabled:
        tune.fit(rebuilt)
    before, after = model.count_params(), rebuilt.count_params()
    outcome.details = {"ratio": ratio, "criterion": criterion, "fine_tuning": tune.describe(),
                       "widths": {k: f"{a}->{b}" for k, (a, b) in widths.items()},
                       "inputs_cut": adjusted, "params": f"{before}->{after}",
                       "param_reduction": 1.0 - after / before if before else 0.0}
    return rebuilt, outcome
