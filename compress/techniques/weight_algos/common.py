"""What the weight algorithms share: which layers they handle (the support table), the model's graph read from its
config, rebuilding a model with edits (batch norms removed, biases added, new weights), batch-norm folding, the
int8 weight grid the converters use, and the inputs a layer sees on the calibration data.

Everything here reads layers by class name and the model by its config, so the same code serves tf_keras and
Keras 3 graph models (functional or Sequential); subclassed models have no graph to read and are refused.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from models.backend import keras, tf
from models.engines.keras3 import keras3
from models.spec import n_samples, take

from compress.techniques.selective import start_outcome

#: Keras class name -> how its kernel is laid out ("conv": (..., in, out); "depthwise": (kh, kw, in, multiplier),
#: output channel in * multiplier + m, as TFLite and ONNX order it; "dense": (in, out))
KINDS = {"Conv1D": "conv", "Conv2D": "conv", "DepthwiseConv2D": "depthwise", "Dense": "dense"}
HANDLED = "Conv1D, Conv2D, DepthwiseConv2D and Dense"
#: the end of the reason for a layer of another class (the console groups these into one line)
UNHANDLED = f"the weight algorithms handle {HANDLED} kernels (the converter quantizes the rest as it is)"
#: the converters' op types of each class (what ``--exclude`` may name instead of layers)
OP_TYPES = {"Conv1D": ("CONV_2D", "Conv"), "Conv2D": ("CONV_2D", "Conv"), "DepthwiseConv2D": ("DEPTHWISE_CONV_2D", "Conv"),
            "Dense": ("FULLY_CONNECTED", "BATCH_MATMUL", "MatMul", "Gemm")}
BATCH = 16  # samples per probe call: a probe returns the inputs of every layer it watches


# ------------------------------------------------------------------------------------------------ support table


def kind_of(layer) -> str | None:
    """The kernel layout of a Keras built-in the algorithms handle, None for anything else (subclasses included)."""
    module = type(layer).__module__ or ""
    if not module.startswith(("tf_keras", "keras")):
        return None
    return KINDS.get(type(layer).__name__)


def support(layer, exclude=(), calls: int = 1) -> str | None:
    """Why the weight algorithms leave ``layer``'s kernel alone, or None when they handle it (``calls``: how many
    times the model calls the layer, from its graph)."""
    name, cls = layer.name, type(layer).__name__
    if name in exclude or any(op in exclude for op in OP_TYPES.get(cls, ())):
        return "kept in float (--exclude): the converter leaves its weights unquantized"
    kind = kind_of(layer)
    if kind is None:
        return f"{cls}: {UNHANDLED}"
    config = layer.get_config()
    if config.get("data_format", "channels_last") not in (None, "channels_last"):
        return f"{cls} with channels_first data: the int8 grid is laid out for channels_last kernels"
    if config.get("groups", 1) != 1:
        return f"a grouped {cls} (groups={config['groups']}): its kernel is not one (in, out) matrix"
    if config.get("padding") == "causal":
        return f"a causal {cls}: its padding is not reproduced here"
    if calls > 1:
        return f"{cls} shared by {calls} calls: its weights serve more than one input"
    return None


def activation_name(layer) -> str:
    fn = getattr(layer, "activation", None)
    return "linear" if fn is None else getattr(fn, "__name__", str(fn))


# --------------------------------------------------------------------------------------------------- int8 grid


@dataclass(frozen=True)
class Grid:
    """The symmetric int8 grid a converter puts a kernel on: codes in [-qmax, qmax], scale = max|w| / qmax per
    output channel (TFLite's conv, depthwise and fully-connected weights; ONNX Runtime's per-channel QDQ/QOperator
    weights) or per tensor (ONNX with --per-tensor); qmax is 64 for ONNX Runtime's reduce_range flavours."""

    qmax: int = 127
    per_channel: bool = True

    def __str__(self) -> str:
        return f"int8 [-{self.qmax}, {self.qmax}], " + ("per output channel" if self.per_channel else "per tensor")


TFLITE_GRID = Grid()


def n_out(kind: str, kernel) -> int:
    return kernel.shape[-2] * kernel.shape[-1] if kind == "depthwise" else kernel.shape[-1]


def out_matrix(kind: str, kernel: np.ndarray) -> np.ndarray:
    """The kernel as (everything else, output channels): a view for per-output-channel scales and rescaling."""
    return kernel.reshape(-1, n_out(kind, kernel))


def in_axis(kind: str, kernel) -> int:
    """The kernel axis of the layer's input channels."""
    return 0 if kind == "dense" else kernel.ndim - 2


def scales(kind: str, kernel: np.ndarray, grid: Grid) -> np.ndarray:
    """The grid's scale per output channel (one value repeated when per tensor); 1 where a channel is all zeros."""
    mat = np.abs(out_matrix(kind, kernel))
    top = mat.max(axis=0) if grid.per_channel else np.full(mat.shape[1], mat.max() if mat.size else 0.0)
    s = top.astype(np.float64) / grid.qmax
    return np.where(s > 0, s, 1.0)


def nearest_codes(kind: str, kernel: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(integer codes in the (rest, out) layout, scales): round to nearest, as the converters do."""
    s = scales(kind, kernel, grid)
    codes = np.clip(np.round(out_matrix(kind, kernel).astype(np.float64) / s), -grid.qmax, grid.qmax)
    return codes, s


def from_codes(kind: str, codes: np.ndarray, s: np.ndarray, shape) -> np.ndarray:
    """float32 weights exactly on the grid: s * code (the converter's own max|w| / qmax gives back s)."""
    return (codes * s).astype(np.float32).reshape(shape)


def fake_quant(kind: str, kernel: np.ndarray, grid: Grid) -> np.ndarray:
    codes, s = nearest_codes(kind, kernel, grid)
    return from_codes(kind, codes, s, kernel.shape)


def linear_op(layer, kind: str):
    """``fn(x, kernel)``: the layer's pre-activation output without its bias, in TensorFlow (differentiable)."""
    config = layer.get_config()
    if kind == "dense":
        return lambda x, w: tf.tensordot(x, w, [[len(x.shape) - 1], [0]])
    padding = config["padding"].upper()
    strides, dilation = tuple(config["strides"]), tuple(config["dilation_rate"])
    if kind == "depthwise":
        return lambda x, w: tf.nn.depthwise_conv2d(x, w, (1,) + strides + (1,), padding,
                                                   dilations=dilation if dilation != (1, 1) else None)
    return lambda x, w: tf.nn.convolution(x, w, strides=strides, padding=padding, dilations=dilation)


def channel_mean(y) -> np.ndarray:
    """Mean of a (batch, ..., channels) output over everything but the channels."""
    y = np.asarray(y, np.float64)
    return y.reshape(-1, y.shape[-1]).mean(axis=0)


# ------------------------------------------------------------------------------------------------------- graph


@dataclass
class Graph:
    """The model's layers and their connections as its config records them (tf_keras or Keras 3 format)."""

    config: dict
    sequential: bool
    order: list  # layer names but the inputs', producers before consumers (as the config lists them)
    producers: dict = field(default_factory=dict)  # name -> producer names
    consumers: dict = field(default_factory=dict)  # name -> consumer names
    outputs: set = field(default_factory=set)
    classes: dict = field(default_factory=dict)  # name -> class name
    calls: dict = field(default_factory=dict)  # name -> how many times the model calls the layer


def _refs(obj):
    """Layer names referenced by a config's inbound-node structure: tf_keras ``[name, node, tensor, kwargs]``
    lists and Keras 3 ``keras_history`` entries."""
    if isinstance(obj, dict):
        if "keras_history" in obj:
            yield obj["keras_history"][0]
        for v in obj.values():
            yield from _refs(v)
    elif isinstance(obj, (list, tuple)):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int) and isinstance(obj[2], int):
            yield obj[0]
            for v in obj[3:]:
                yield from _refs(v)
        else:
            for v in obj:
                yield from _refs(v)


def _rename(obj, mapping: dict):
    if isinstance(obj, dict):
        out = {k: _rename(v, mapping) for k, v in obj.items()}
        if "keras_history" in obj and obj["keras_history"][0] in mapping:
            out["keras_history"] = [mapping[obj["keras_history"][0]], *obj["keras_history"][1:]]
        return out
    if isinstance(obj, (list, tuple)):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int) and isinstance(obj[2], int):
            return [mapping.get(obj[0], obj[0]), *[_rename(v, mapping) for v in obj[1:]]]
        return [_rename(v, mapping) for v in obj]
    return obj


def _entry_name(entry: dict) -> str:
    return entry.get("name") or entry["config"]["name"]


def graph_problem(model) -> str | None:
    """Why the model's graph cannot be read and rebuilt (a subclassed model, a nested model), or None."""
    if not getattr(model, "_is_graph_network", False) and type(model).__name__ not in ("Functional", "Sequential"):
        return "a subclassed model: its graph cannot be read from its config and rebuilt"
    if not getattr(model, "inputs", None):
        return "the model is not built (no inputs): build it on its input shape first"
    nested = [layer.name for layer in model.layers if hasattr(layer, "layers") and layer.weights]
    if nested:
        return f"it nests model(s) {', '.join(nested)}: flatten the model first (the graph is read one level deep)"
    return None


def graph_of(model) -> Graph:
    config = model.get_config()
    entries = config["layers"]
    sequential = "input_layers" not in config
    g = Graph(config, sequential, [_entry_name(e) for e in entries])
    for i, entry in enumerate(entries):
        name = _entry_name(entry)
        g.classes[name] = entry["class_name"]
        if sequential:
            producers = [_entry_name(entries[i - 1])] if i else []
        else:
            producers = list(dict.fromkeys(_refs(entry.get("inbound_nodes", []))))
            g.calls[name] = len(entry.get("inbound_nodes", []))
        g.producers[name] = producers
        for p in producers:
            g.consumers.setdefault(p, []).append(name)
    g.outputs = {g.order[-1]} if sequential else set(_refs(config["output_layers"]))
    g.order = [n for n in g.order if g.classes[n] != "InputLayer"]  # a Sequential model does not list them
    return g


def rebuild(model, graph: Graph | None = None, remove: dict | None = None, config_updates: dict | None = None,
            weights: dict | None = None):
    """A new model from ``model``'s config: layers in ``remove`` (name -> the layer whose output replaces theirs)
    left out, ``config_updates`` (name -> config keys) applied, weights from ``weights`` (name -> list) or else
    copied from ``model``. The caller's model is not touched."""
    graph = graph or graph_of(model)
    remove, config_updates, weights = remove or {}, config_updates or {}, weights or {}
    config = copy.deepcopy(graph.config)
    entries = [e for e in config["layers"] if _entry_name(e) not in remove]
    for e in entries:
        e["config"].update(config_updates.get(_entry_name(e), {}))
    if not graph.sequential:
        mapping = dict(remove)
        for e in entries:
            e["inbound_nodes"] = _rename(e.get("inbound_nodes", []), mapping)
        config["output_layers"] = _rename(config["output_layers"], mapping)
    config["layers"] = entries
    custom = {type(layer).__name__: type(layer) for layer in model.layers}
    new = type(model).from_config(config, custom_objects=custom)
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new


def quantizable(model, graph: Graph, exclude=()) -> tuple[list[str], dict]:
    """(names of the layers the algorithms handle, in graph order; {layer: reason} for the other layers with
    weights). Batch norms are not listed: folding reports them."""
    names, skipped = [], {}
    for name in graph.order:
        layer = model.get_layer(name)
        if not layer.weights or type(layer).__name__ == "BatchNormalization":
            continue
        reason = support(layer, exclude, graph.calls.get(name, 1))
        if reason is None:
            names.append(name)
        else:
            skipped[name] = reason
    return names, skipped


def verdicts(model, exclude=(), need_bias: bool = False) -> dict:
    """{layer with weights: None where AdaRound (``need_bias``: bias correction) takes its kernel (a batch norm: is
    folded first), else why not}; nothing is run."""
    problem = graph_problem(model)
    if problem:
        return {layer.name: problem for layer in model.layers if layer.weights}
    graph = graph_of(model)
    out = {}
    for name in graph.order:
        layer = model.get_layer(name)
        if not layer.weights:
            continue
        if graph.classes[name] == "BatchNormalization":
            out[name] = _fold_reason(model, graph, name)[1]
            continue
        out[name] = support(layer, exclude, graph.calls.get(name, 1))
        folds = any(graph.classes.get(c) == "BatchNormalization" and _fold_reason(model, graph, c)[0] == name
                    for c in graph.consumers.get(name, []))
        if out[name] is None and need_bias and not folds and not layer.get_config().get("use_bias", True):
            out[name] = "it has no bias to correct (use_bias=False)"
    return out


# ------------------------------------------------------------------------------------------ batch-norm folding


def _bn_channel_axis_ok(bn) -> bool:
    axis = bn.get_config().get("axis", -1)
    axis = axis if isinstance(axis, (list, tuple)) else [axis]
    rank = len(bn.input.shape)
    return len(axis) == 1 and axis[0] in (-1, rank - 1)


def _fold_reason(model, graph: Graph, bn_name: str) -> tuple[str | None, str | None]:
    """(the layer ``bn_name`` folds into, None) or (None, why it cannot be folded)."""
    producers = graph.producers.get(bn_name, [])
    bn = model.get_layer(bn_name)
    if graph.calls.get(bn_name, 1) > 1:
        return None, "a batch norm shared by several calls cannot be folded"
    if len(producers) != 1:
        return None, "it does not follow a single layer: nothing to fold it into (the converter keeps it)"
    if graph.classes.get(producers[0]) == "InputLayer":
        return None, "it normalizes the model's input: nothing before it to fold it into (the converter keeps it)"
    prev = model.get_layer(producers[0])
    if kind_of(prev) is None or support(prev, calls=graph.calls.get(prev.name, 1)) is not None:
        return None, (f"it follows {prev.name} ({type(prev).__name__}), not a conv/depthwise/dense layer: nothing to "
                      "fold it into (the converter keeps it as a multiply-add)")
    if activation_name(prev) != "linear":
        return None, (f"it follows {prev.name}'s {activation_name(prev)} activation: a batch norm folds only into a "
                      "linear output")
    if graph.consumers.get(prev.name, []) != [bn_name] or prev.name in graph.outputs:
        return None, f"{prev.name}'s output also goes elsewhere: folding would change that path"
    if not _bn_channel_axis_ok(bn):
        return None, "it normalizes a non-channel axis"
    return prev.name, None


def fold_batchnorms(model, graph: Graph | None = None):
    """(model with each foldable BatchNormalization folded into the conv/depthwise/dense before it and removed,
    {bn: layer folded into}, {bn: why it stayed}). Returns ``model`` itself when there is nothing to fold."""
    graph = graph or graph_of(model)
    folded, stayed, weights, updates = {}, {}, {}, {}
    for name in graph.order:
        if graph.classes[name] != "BatchNormalization":
            continue
        target, reason = _fold_reason(model, graph, name)
        if target is None:
            stayed[name] = reason
            continue
        bn, prev = model.get_layer(name), model.get_layer(target)
        kind = kind_of(prev)
        kernel, *rest = prev.get_weights()
        bias = rest[0] if rest else np.zeros(n_out(kind, kernel), np.float32)
        gamma = np.asarray(bn.gamma) if bn.gamma is not None else 1.0
        beta = np.asarray(bn.beta) if bn.beta is not None else 0.0
        mean, var = np.asarray(bn.moving_mean, np.float64), np.asarray(bn.moving_variance, np.float64)
        scale = gamma / np.sqrt(var + bn.epsilon)
        new_kernel = (out_matrix(kind, kernel.astype(np.float64)) * scale).reshape(kernel.shape)
        weights[target] = [new_kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]
        updates[target] = {"use_bias": True}
        folded[name] = target
    if not folded:
        return model, folded, stayed
    return rebuild(model, graph, remove=folded, config_updates=updates, weights=weights), folded, stayed


# ---------------------------------------------------------------------------------------------- data and probes


def functional(model, inputs, outputs):
    """A functional model of ``model``'s own Keras (tf_keras or Keras 3)."""
    engine = keras if type(model).__module__.startswith("tf_keras") else keras3()
    return engine.Model(inputs, outputs)


def batches(data, size: int = BATCH):
    for start in range(0, n_samples(data), size):
        yield take(data, slice(start, start + size))


def first(data, n: int):
    return take(data, slice(0, n))


def _call(model, batch) -> list[np.ndarray]:
    """The model's outputs on one batch, called eagerly (the probes are built per layer: tracing each would cost
    more than running it)."""
    out = model(batch, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def run(model, data) -> list[np.ndarray]:
    """The model's outputs on ``data``, batch by batch, as a list of arrays."""
    return [np.concatenate(p) for p in zip(*(_call(model, batch) for batch in batches(data)))]


def input_probe(model, names: list[str]):
    """A model computing the inputs of the layers ``names`` (each called once) from the model's inputs."""
    return functional(model, model.inputs, [model.get_layer(n).input for n in names])


def mean_inputs(probe, data) -> list[np.ndarray]:
    """Each probed input averaged over the samples (positions kept): E[x] per layer."""
    total, count = None, 0
    for batch in batches(data):
        out = _call(probe, batch)
        sums = [np.asarray(o, np.float64).sum(axis=0) for o in out]
        total = sums if total is None else [a + b for a, b in zip(total, sums)]
        count += np.asarray(out[0]).shape[0]
    return [t / count for t in total]


def max_relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """max |a - b| / max |a| over the outputs (0 for identical outputs)."""
    worst = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)))
    return worst


def begin(model, technique: str, exclude=(), data_reason: str | None = None, calibration=None):
    """What every weight algorithm does first: (Outcome, folded model, graph, quantizable layer names), the model
    None when the Outcome is blocked (non-finite weights, a graph it cannot read, or no calibration data where
    ``data_reason`` says why it needs some); batch norms folded and the layers it leaves alone recorded."""
    outcome = start_outcome(model, technique)
    if outcome.blocked is None:
        outcome.blocked = graph_problem(model)
    if outcome.blocked is None and data_reason and calibration is None:
        outcome.blocked = f"it needs calibration data ({data_reason})"
    if outcome.blocked:
        return outcome, None, None, []
    folded_model, folded, stayed = fold_batchnorms(model)
    outcome.details["folded"] = folded
    outcome.skipped.update(stayed)
    graph = graph_of(folded_model)
    names, skipped = quantizable(folded_model, graph, exclude)
    outcome.skipped.update(skipped)
    return outcome, folded_model, graph, names
