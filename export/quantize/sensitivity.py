"""Per-layer int8 sensitivity, from the runtimes' own quantization debuggers, mapped back to Keras layer names.

Mixed precision keeps the most sensitive layers in float; for that the ranking must name layers the way
``QuantRecipe.exclude`` does (``export.quantize.ptq.match_names``: a ``/``-separated component of a TFLite tensor or
ONNX node name equals the layer name), so every name ranked here can be excluded.

TFLite: ``tf.lite.experimental.QuantizationDebugger`` runs the int8 model with NumericVerify ops, each op's
float twin fed the same dequantized inputs, so the error is the op's own; the measure is its TensorFlow guide's
``rmse/scale`` (RMS error in output quantization steps; about 0.29 is pure rounding).
ONNX Runtime: ``onnxruntime.quantization.qdq_loss_debug`` saves every activation of the fp32 and the QDQ model on
the same inputs; a layer's error is the noise it adds, NSR_out - NSR_in (negative when its sum over many inputs
averages their noise down) with NSR = ||float - quantized||
/ ||float|| = 10^(-SQNR/20) (the debugger's cross-model SQNR) of the activations as their consumers see them
(after DequantizeLinear), so it holds the layer's weight and output quantization and its arithmetic, as
TFLite's per-op error does.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.spec import n_samples, take

from export.quantize.int8_choice import flavour
from export.quantize.ptq import QuantRecipe, match_names
from export.quantize.ptq import _tflite_op_outputs, calibration_feeds, configure_tflite, quantize_onnx

DEBUG_SAMPLES = 32  # calibration samples the debuggers run (the quantization itself calibrates on all of them)
CHUNK = 8  # samples per collect_activations call: every activation of both models is held in memory
TFLITE_MEASURE = "TFLite QuantizationDebugger rmse/scale (RMS error of the op's output in quantization steps)"
ONNX_MEASURE = ("ONNX Runtime qdq_loss_debug noise added by the layer, NSR_out - NSR_in, "
                "NSR = ||float - quantized|| / ||float|| = 10^(-SQNR/20)")


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str  # the Keras layer name (as in subject.model.layers / QuantRecipe.exclude)
    error: float  # comparable within one ranking; bigger = more sensitive
    measure: str
    ops: tuple[str, ...] = ()  # the runtime tensors/nodes mapped to this layer


@dataclass
class Ranking:
    layers: list[LayerSensitivity]  # most sensitive first
    measure: str
    unmapped: tuple[str, ...]  # quantized ops/tensors whose names hold no layer name: in no layer's error
    recipe: str  # the recipe that was analysed (ONNX: its QDQ flavour)
    samples: int
    seconds: float


def layer_of(name: str, layers, prefer=()) -> str | None:
    """The Keras layer a runtime tensor/node name belongs to: the outermost ``/``-component equal to a layer name,
    in the first ``;``-segment (TFLite's fused names) that has one, a layer in ``prefer`` first (TFLite names a
    convolution fused with its batch norm and ReLU ``act/Relu;bn/FusedBatchNormV3;conv/Conv2D``: the conv is the
    layer to name); None when no component is a layer name.

    Components, not substrings: ``dense_1`` never claims ``dense_10/MatMul``, and this is the rule
    ``export.quantize.ptq.match_names`` excludes by. Inside a nested model or an unrolled RNN the outer (top-level)
    layer wins (``model/backbone/conv/Conv2D`` -> ``backbone``; ``model/lstm/lstm_cell/MatMul_3`` -> ``lstm``).
    """
    found = [next((p for p in segment.split("/") if p in layers), None) for segment in name.split(";")]
    found = [f for f in found if f is not None]
    return next((f for f in found if f in prefer), found[0] if found else None)


def kernel_layers(model) -> set[str]:
    """Layers with multiplicative weights (what int8 weights change)."""
    from compress.techniques.selective import kernel_weights  # deferred: compress.techniques.selective loads TensorFlow

    return {layer.name for layer in model.layers if kernel_weights(layer)}


def rank(subject, recipe: QuantRecipe, calibration=None, samples: int = DEBUG_SAMPLES) -> list[LayerSensitivity]:
    """Layers with a quantized op, most sensitive first (see :func:`analyse`)."""
    return analyse(subject, recipe, calibration, samples).layers


def analyse(subject, recipe: QuantRecipe, calibration=None, samples: int = DEBUG_SAMPLES) -> Ranking:
    """Run the runtime's quantization debugger on ``subject.model`` quantized by ``recipe`` (tflite int8 or onnx
    int8; layers already in ``recipe.exclude`` stay float and are not ranked), calibrated on ``calibration``
    (default ``subject.calibration(100)``), its errors measured on the first ``samples`` calibration samples."""
    from export.exporter import _keep_raw_normalizers_float  # deferred: export.exporter loads TensorFlow

    if recipe.mode != "int8":
        raise ValueError(f"sensitivity needs an int8 recipe (the layers it ranks are then kept float with exclude), "
                         f"not {recipe.format} {recipe.mode}")
    if calibration is None:
        calibration = subject.calibration(100)
    recipe, _ = _keep_raw_normalizers_float(subject, recipe)  # as the exported file will: those stay float anyway
    debug = take(calibration, slice(0, max(1, min(samples, n_samples(calibration)))))
    start = time.monotonic()
    fn = _tflite if recipe.format == "tflite" else _onnx
    layers, unmapped, measure, analysed = fn(subject.model, recipe, calibration, debug)
    layers.sort(key=lambda s: (-s.error, s.layer))
    return Ranking(layers, measure, tuple(unmapped), str(analysed), n_samples(debug), time.monotonic() - start)


def _aggregate(errors: dict[str, list[tuple[float, str]]], measure: str) -> list[LayerSensitivity]:
    """Per layer: the worst op's error (max), and every op mapped to it."""
    return [LayerSensitivity(layer, float(max(e for e, _ in pairs)), measure, tuple(op for _, op in pairs))
            for layer, pairs in errors.items()]


# ---------------------------------------------------------------------------------------------------------- TFLite

def _tflite(model, recipe: QuantRecipe, calibration, debug):
    from models.backend import quiet_stderr, tf  # deferred: models.backend loads TensorFlow
    from export.rewrites import has_rnn, unrolled, with_static_batch  # deferred: export.rewrites loads TensorFlow

    from export.tflite import input_names  # deferred: export.tflite loads TensorFlow

    model = unrolled(model) if has_rnn(model) else model  # the graph the exporter converts
    names = input_names(model)
    order: list[str] = []  # Keras input per TFLite input: known once the debug model exists

    def dataset():
        for i in range(n_samples(debug)):
            sample = take(debug, slice(i, i + 1))
            sample = sample if isinstance(sample, dict) else {names[0]: sample}
            yield [np.asarray(sample[k], np.float32) if np.asarray(sample[k]).dtype.kind == "f"
                   else np.asarray(sample[k]) for k in order]

    error = None
    for batch in (None, 1):  # RNNs need a static batch to stay builtin ops (as in export.exporter)
        source = with_static_batch(model, batch) if batch else model
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
        configure_tflite(converter, dataclasses.replace(recipe, exclude=(), int8_io=False), calibration, names)
        try:
            with quiet_stderr():
                debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
            break
        except Exception as e:  # noqa: BLE001  (ConverterError: try the static batch)
            error = e
    else:
        raise ValueError(f"the TFLite quantization debugger cannot convert this model: "
                         f"{(str(error).strip().splitlines() or [''])[0][:300]}")
    ops = [e for e in recipe.exclude if e.isupper()]
    excluded = [e for e in recipe.exclude if not e.isupper()]
    nodes = match_names(_tflite_op_outputs(debugger.calibrated_model), excluded, "op") if excluded else None
    if ops or nodes or recipe.int8_io:
        with quiet_stderr():
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                fully_quantize=recipe.int8_io, denylisted_ops=ops or None, denylisted_nodes=nodes)

    from ai_edge_litert.interpreter import Interpreter  # deferred: LiteRT

    interp = Interpreter(model_content=debugger.quant_model)
    tensor_name = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    order.extend(_input_key(d["name"], names) for d in interp.get_input_details())
    with quiet_stderr():
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layers, prefer = {layer.name for layer in model.layers}, kernel_layers(model)
    errors: dict[str, list[tuple[float, str]]] = {}
    unmapped = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        name = tensor_name.get(int(row["tensor_idx"]), row["tensor_name"])
        mse, scale = float(row["mean_squared_error"]), float(row["scale"])
        value = math.sqrt(mse) / scale if scale > 0 else (0.0 if mse == 0 else math.inf)
        label = f"{row['op_name']} {name.split(';')[0]}"
        layer = layer_of(name, layers, prefer) or layer_of(row["tensor_name"], layers, prefer)
        if layer is None:
            unmapped.append(f"{label} (rmse/scale {value:.4g})")
            continue
        errors.setdefault(layer, []).append((value, label))
    return _aggregate(errors, TFLITE_MEASURE), unmapped, TFLITE_MEASURE, recipe


def _input_key(detail_name: str, names: list[str]) -> str:
    """The Keras input a TFLite input tensor feeds (``serving_default_image:0`` -> ``image``)."""
    if len(names) == 1:
        return names[0]
    base = detail_name.split(":")[0]
    base = base[len("serving_default_"):] if base.startswith("serving_default_") else base
    for name in names:
        if base == name:
            return name
    raise ValueError(f"cannot tell which model input the TFLite input {detail_name} is (inputs: {', '.join(names)})")


# ------------------------------------------------------------------------------------------------------------ ONNX

def _qdq(recipe: QuantRecipe, model, calibration) -> QuantRecipe:
    """The recipe's QDQ twin (qdq_loss_debug compares QDQ activations): QOperator flavours keep their activation
    type; ``auto`` is resolved first, as the exporter does."""
    from export.onnx import resolve_int8  # deferred: export.onnx loads TensorFlow

    recipe, _ = resolve_int8(model, recipe, calibration)
    chosen = flavour(recipe.onnx_int8)
    return dataclasses.replace(recipe, onnx_int8="qdq-u8s8" if chosen.activation == "uint8" else "qdq-s8s8")


def _onnx(model, recipe: QuantRecipe, calibration, debug):
    import onnx  # deferred: onnx
    from onnx import helper  # deferred: onnx
    # deferred: ONNX Runtime
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    from export.onnx import convert, input_names  # deferred: export.onnx loads TensorFlow
    from models.backend import quiet_stderr  # deferred: models.backend loads TensorFlow

    names = input_names(model)
    qdq_recipe = _qdq(recipe, model, calibration)
    fp32 = convert(model)
    graph = onnx.load_from_string(fp32).graph
    dtypes = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in graph.input}
    feeds = [{k: np.asarray(v, dtypes.get(k)) for k, v in f.items()} for f in calibration_feeds(debug, names)]
    sums: dict[str, list[float]] = {}  # tensor -> [sum float^2, sum (float - quantized)^2]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        src.write_bytes(fp32)
        with quiet_stderr():
            quantize_onnx(src, dst, qdq_recipe, calibration, names)
        qdq_graph = onnx.load(str(dst)).graph
        for path in (src, dst):
            modify_model_output_intermediate_tensors(str(path), str(path.with_suffix(".aug.onnx")))
        for i in range(0, len(feeds), CHUNK):
            chunk = feeds[i:i + CHUNK]
            with quiet_stderr():
                floats = collect_activations(str(src.with_suffix(".aug.onnx")), chunk)
                quants = collect_activations(str(dst.with_suffix(".aug.onnx")), chunk)
            # the quantized activations as their consumers see them (after DQ: before Q a folded Relu is not yet
            # applied); the others under their own names
            matched = create_activation_matching(quants, floats)
            pairs = {t: (m["float"], m["post_qdq"]) for t, m in matched.items() if "float" in m}
            pairs.update({t: (floats[t], quants[t]) for t in floats if t in quants and t not in pairs})
            for t, (f, q) in pairs.items():
                f = np.concatenate([np.ravel(a) for a in f]).astype(np.float64)
                q = np.concatenate([np.ravel(a) for a in q]).astype(np.float64)
                acc = sums.setdefault(t, [0.0, 0.0])
                acc[0] += float(np.dot(f, f))
                acc[1] += float(np.dot(f - q, f - q))
    return (*_onnx_layers(model, graph, qdq_graph, sums), ONNX_MEASURE, qdq_recipe)


def _nsr(sums: dict, tensor: str) -> float | None:
    if tensor not in sums:
        return None
    signal, noise = sums[tensor]
    return math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else math.inf)


def _onnx_layers(model, graph, qdq_graph, sums):
    """Per layer (its nodes by name): the noise it adds between its input and output activations; only layers with
    a quantized node in the QDQ model are ranked."""
    layers, prefer = {layer.name for layer in model.layers}, kernel_layers(model)
    from onnx import TensorProto  # deferred: onnx

    dequantized = {o for n in qdq_graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    float_weights = {t.name for t in qdq_graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    # quantized: fed by a DequantizeLinear with no float weight left (an excluded node keeps its float weights, though
    # ONNX Runtime may still quantize the activation between it and a quantized neighbour)
    quantized = {n.name for n in qdq_graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                 and dequantized & set(n.input) and not float_weights & set(n.input)}
    initializers = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    consumers: dict[str, set[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.name)
    kept = {n.name for n in qdq_graph.node}
    node = {n.name: n for n in graph.node}

    def seen(tensor: str) -> str:
        """The saved tensor that stands for ``tensor``: past a ReLU/Clip that the QDQ model folded into the
        quantization of the tensor before it (a separate Keras Activation layer after a conv)."""
        while tensor not in sums and len(consumers.get(tensor, ())) == 1:
            (after,) = consumers[tensor]
            if after in kept or node[after].op_type not in ("Relu", "Clip"):
                break
            tensor = node[after].output[0]
        return tensor

    by_layer: dict[str, list] = {}
    unmapped = []
    for n in graph.node:
        layer = layer_of(n.name, layers, prefer)
        if layer is not None:
            by_layer.setdefault(layer, []).append(n)
        elif n.name in quantized:
            unmapped.append(f"{n.op_type} {n.name}")
    errors = {}
    for layer, nodes in by_layer.items():
        mine = {n.name for n in nodes}
        if not mine & quantized:
            continue
        produced = {o for n in nodes for o in n.output}
        ins = {i for n in nodes for i in n.input if i and i not in produced and i not in initializers}
        outs = {o for o in produced if o in outputs or consumers.get(o, set()) - mine}
        nsr_out = [v for v in (_nsr(sums, seen(o)) for o in outs) if v is not None]
        if not nsr_out:
            unmapped.append(f"{layer}: no output activation was saved ({', '.join(sorted(outs)) or 'none'})")
            continue
        nsr_in = max([v for v in (_nsr(sums, i) for i in ins) if v is not None] or [0.0])
        out = max(nsr_out)
        added = out - nsr_in if math.isfinite(out) else math.inf
        errors[layer] = [(added, f"{n.op_type} {n.name}") for n in nodes if n.name in quantized]
    return _aggregate(errors, ONNX_MEASURE), unmapped
