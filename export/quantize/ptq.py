"""Post-training quantization recipes for TFLite (converter options) and ONNX Runtime (quantize_*).

Conversion itself lives in ``export``; these functions only say how to quantize.

TFLite: ``dynamic`` (int8 weights, float activations), ``float16``, ``int8`` (full integer from a
calibration sample; ``int8_io`` also makes the input/output tensors int8) and ``16x8`` (int16
activations, int8 weights). ONNX Runtime: ``dynamic`` and static ``int8`` (per-channel or per-tensor
weights; MinMax, Entropy or Percentile calibration; QDQ or QOperator with int8 or uint8 activations, by
default the fastest accurate one on this host: see ``export.quantize.int8_choice``). ``exclude`` keeps the named layers (or
op types) in float: TFLite through the MLIR quantizer's deny lists, ONNX through ``nodes_to_exclude``.
``weight_algos`` names post-training weight algorithms (cross-layer equalization, AdaRound, bias correction: see
``compress.techniques.weight_algos``) that the exporter runs on the Keras model before converting it.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.spec import Inputs, n_samples, take

from compress.techniques import weight_algos

from export.quantize.int8_choice import AUTO, CHOICES, flavour

TFLITE_MODES = ("fp32", "dynamic", "float16", "int8", "16x8")
ONNX_MODES = ("fp32", "float16", "dynamic", "int8")  # float16: weights and ops in half, float I/O
MODES = {"tflite": TFLITE_MODES, "onnx": ONNX_MODES}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantRecipe:
    format: str  # "tflite" | "onnx"
    mode: str = "fp32"
    #: TFLite int8: int8 input and output tensors (the runtime (de)quantizes for the caller)
    int8_io: bool = False
    #: ONNX: per-channel weight scales (per-tensor when False)
    per_channel: bool = True
    #: ONNX static int8: how activation ranges are calibrated
    calibration: str = "minmax"
    #: layer names (or op types, e.g. FULLY_CONNECTED / MatMul) kept in float
    exclude: tuple = ()
    #: ONNX static int8 flavour: "auto" (measured per host and model family) or e.g. "qdq-u8s8"
    onnx_int8: str = "auto"
    #: post-training weight algorithms run on the Keras model first, in their own order (weight_algos.ALGOS)
    weight_algos: tuple = ()

    def __post_init__(self):
        if self.format not in MODES:
            raise ValueError(f"unknown format {self.format!r}; valid: {', '.join(MODES)}")
        if self.mode not in MODES[self.format]:
            raise ValueError(f"mode {self.mode!r} is not available for {self.format}; valid: {', '.join(MODES[self.format])}")
        object.__setattr__(self, "exclude", tuple(self.exclude or ()))
        if self.int8_io and (self.format, self.mode) != ("tflite", "int8"):
            raise ValueError(f"int8 input/output needs tflite int8, not {self.format} {self.mode}")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {self.calibration!r}; valid: {', '.join(CALIBRATION_METHODS)}")
        if self.calibration != "minmax" and (self.format, self.mode) != ("onnx", "int8"):
            raise ValueError(f"calibration method {self.calibration} applies to onnx int8 only "
                             "(TFLite calibrates min/max)")
        if self.onnx_int8 not in CHOICES:
            raise ValueError(f"unknown ONNX int8 flavour {self.onnx_int8!r}; valid: {', '.join(CHOICES)}")
        if self.onnx_int8 != AUTO and (self.format, self.mode) != ("onnx", "int8"):
            raise ValueError(f"the ONNX int8 flavour {self.onnx_int8} applies to onnx int8 only, "
                             f"not {self.format} {self.mode}")
        object.__setattr__(self, "weight_algos", weight_algos.parse(self.weight_algos))
        if self.weight_algos and self.mode not in ("int8", "16x8"):
            raise ValueError(f"weight algorithms ({', '.join(self.weight_algos)}) prepare a model for int8 weights "
                             f"from calibration data: they need int8 or 16x8, not {self.format} {self.mode}")
        if not self.per_channel and self.format != "onnx":
            raise ValueError("per-tensor weights apply to onnx only (TFLite picks per-channel for convolutions)")
        if self.exclude and (self.mode in ("fp32", "float16") or (self.format, self.mode) in (("tflite", "dynamic"),
                                                                                              ("tflite", "16x8"))):
            raise ValueError(f"excluding layers needs tflite int8 or onnx dynamic/int8, not {self.format} {self.mode}"
                             + (" (the MLIR quantizer's deny list gives 16x8 convolutions an int16 output with a "
                                "non-zero zero point, which LiteRT rejects)" if self.mode == "16x8" else ""))

    @property
    def needs_calibration(self) -> bool:
        return self.mode in ("int8", "16x8")

    def calibration_of(self, subject):
        """The subject's calibration inputs when this recipe needs them (100 samples), else None."""
        return subject.calibration(100) if self.needs_calibration else None

    def __str__(self) -> str:
        extra = []
        if self.int8_io:
            extra.append("int8 I/O")
        if self.format == "onnx" and self.mode != "fp32" and not self.per_channel:
            extra.append("per-tensor")
        if self.calibration != "minmax":
            extra.append(self.calibration)
        if self.onnx_int8 != "auto":
            extra.append(self.onnx_int8)
        if self.exclude:
            extra.append("float: " + ",".join(self.exclude))
        if self.weight_algos:
            extra.append("+".join(self.weight_algos))
        return f"{self.format}({', '.join([self.mode] + extra)})"

    def without_weight_algos(self) -> "QuantRecipe":
        """The conversion step alone (what a file's chain names after the weight algorithms' own steps)."""
        return replace(self, weight_algos=())


def _samples(calibration: Inputs, input_names: list[str]):
    """Yield single-sample input dicts from a calibration array or dict."""
    for i in range(n_samples(calibration)):
        sample = take(calibration, slice(i, i + 1))
        if not isinstance(sample, dict):
            sample = {input_names[0]: sample}
        yield {k: np.asarray(v) for k, v in sample.items()}


def calibration_feeds(calibration: Inputs, input_names: list[str]) -> list[dict]:
    """The calibration sample as a list of single-sample input dicts (what ONNX Runtime sessions take)."""
    return list(_samples(calibration, input_names))


def match_names(names, wanted, what: str) -> list[str]:
    """Graph node/tensor names that belong to the layers in ``wanted`` (by name segment); error on a miss."""
    out, missing = [], []
    for layer in wanted:
        hits = [n for n in names if any(part == layer or part.startswith(f"{layer}/") or f"/{layer}/" in part
                                        or part.endswith(f"/{layer}") for part in n.split(";"))]
        if not hits:
            missing.append(layer)
        out.extend(hits)
    if missing:
        raise ValueError(f"nothing to exclude for {', '.join(missing)}: no {what} of that layer in the graph")
    return sorted(set(out))


def configure_tflite(converter, recipe: QuantRecipe, calibration: Inputs | None, input_names: list[str]):
    """Set a TFLiteConverter's optimisation options for the recipe (float I/O unless ``int8_io``)."""
    import tensorflow as tf  # already imported through models.backend by the caller

    if recipe.mode == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif recipe.mode in ("int8", "16x8"):
        if calibration is None:
            raise ValueError(f"{recipe.mode} quantization needs a calibration sample")

        def representative():  # a dict keyed by input name: the signature's input order is not Keras's
            for sample in _samples(calibration, input_names):
                yield {name: sample[name].astype(np.float32) if sample[name].dtype.kind == "f" else sample[name]
                       for name in input_names}

        converter.representative_dataset = representative
        if recipe.mode == "16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS]
        if recipe.int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if recipe.exclude:
            _convert_excluding(converter, recipe)
    return converter


def _convert_excluding(converter, recipe: QuantRecipe) -> None:
    """Make ``converter.convert()`` calibrate first, then quantize with the excluded layers deny-listed.

    The same two steps as tf.lite.experimental.QuantizationDebugger's selective quantization; the
    converter keeps its interface so export.tflite needs no change.
    """
    import tensorflow as tf  # deferred: TensorFlow
    from tensorflow.compiler.mlir.lite import types_pb2  # deferred: TensorFlow
    from tensorflow.lite.python import convert as tfl_convert  # deferred: TensorFlow

    original = converter.convert
    ops = [e for e in recipe.exclude if e.isupper()]
    layers = [e for e in recipe.exclude if not e.isupper()]

    def convert():
        converter.experimental_mlir_quantizer = True
        converter._experimental_calibrate_only = True
        try:
            calibrated = original()
        finally:
            converter._experimental_calibrate_only = False
        nodes = match_names(_tflite_op_outputs(calibrated), layers, "op") if layers else None
        io_type = tf.int8 if recipe.int8_io else tf.float32
        return tfl_convert.mlir_quantize(
            calibrated, fully_quantize=recipe.int8_io,
            inference_type=types_pb2.QUANTIZED_INT8,
            input_data_type=io_type, output_data_type=io_type, denylisted_ops=ops or None, denylisted_nodes=nodes)

    converter.convert = convert


def _tflite_op_outputs(data: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter  # deferred: LiteRT

    interp = Interpreter(model_content=data)
    details = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    return [details[i] for op in interp._get_ops_details() for i in op["outputs"] if i in details]


def quantize_onnx(fp32_path: Path, out_path: Path, recipe: QuantRecipe, calibration: Inputs | None,
                  input_names: list[str], calibration_cache: Path | None = None) -> None:
    """ONNX Runtime quantization of an fp32 ONNX file: dynamic (weights int8) or static int8 in the recipe's
    flavour (``auto`` must be resolved first, see export.onnx). ``calibration_cache``: a JSON file of tensor
    ranges that ONNX Runtime writes on the first call and reads on later ones (one calibration per flavour
    search)."""
    import onnx  # deferred: onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)  # deferred: ONNX Runtime

    exclude = []
    if recipe.exclude:
        graph = onnx.load(str(fp32_path)).graph
        op_types = {e for e in recipe.exclude if any(n.op_type == e for n in graph.node)}
        exclude = [n.name for n in graph.node if n.op_type in op_types]
        layers = [e for e in recipe.exclude if e not in op_types]
        if layers:
            exclude += match_names([n.name for n in graph.node], layers, "node")
    if recipe.mode == "dynamic":
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=recipe.per_channel,
                         nodes_to_exclude=exclude)
        return
    if recipe.onnx_int8 == "auto":
        raise ValueError("resolve the ONNX int8 flavour first (export.onnx.resolve_int8)")
    if calibration is None:
        raise ValueError("int8 quantization needs a calibration sample")
    chosen = flavour(recipe.onnx_int8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(list(_samples(calibration, input_names)))

        def get_next(self):
            return next(self._it, None)

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[recipe.calibration]
    activation = QuantType.QUInt8 if chosen.activation == "uint8" else QuantType.QInt8
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
        quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=getattr(QuantFormat, chosen.quant_format),
                        activation_type=activation, weight_type=QuantType.QInt8, per_channel=recipe.per_channel,
                        reduce_range=chosen.reduce_range, calibrate_method=method, nodes_to_exclude=exclude,
                        calibration_cache_path=str(calibration_cache) if calibration_cache else None)
