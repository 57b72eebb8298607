"""Keras -> ONNX conversion with tf2onnx, keeping the Keras input and output names; checker and shape
inference run on every file produced."""
from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import tempfile
import threading
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import tf2onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel
from tf2onnx import constants

from models.backend import quiet_stderr, tf
from models.errors import UserError
from models.engines.native import serving_of
from models.spec import Inputs

from export.onnx_rewrites import rewrite
from export.quantize.int8_choice import choose, flavour
from export.quantize.ptq import QuantRecipe, quantize_onnx
from export.quantize.ptq import calibration_feeds

DEFAULT_OPSET = 17


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def check(data: bytes) -> bytes:
    """ONNX checker + shape inference; returns the model with inferred shapes."""
    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True)
    except Exception as e:
        raise UserError(f"the ONNX file fails the checker: {(str(e).strip().splitlines() or [''])[0][:300]}") from None
    return proto.SerializeToString()


def _without_inferred_shapes(data: bytes) -> bytes:
    """The file without the intermediate shapes ``check`` inferred (its inputs and outputs keep theirs): the same
    graph as Keras 3's ``model.export(format="onnx")`` writes, 13% smaller for a small transformer block (6.9 of
    53 KiB were inferred shapes), as fast; ONNX Runtime infers them again when it loads the file."""
    proto = onnx.load_from_string(data)
    if not len(proto.graph.value_info):
        return data
    del proto.graph.value_info[:]
    return proto.SerializeToString()


_FP32: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(opset, batch, weights): fp32 bytes}


def _weights_digest(model) -> str:
    """Weights can change in place (set_weights, training): the cache must not outlive them."""
    h = hashlib.blake2b(digest_size=16)
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).view(np.uint8).data)
    return h.hexdigest()


def fp32_graph(model, opset: int = DEFAULT_OPSET, batch: int | None = None) -> bytes:
    """The checked fp32 ONNX graph of ``model``, converted once per model object: the float16 and int8 files
    of a model start from the same graph, and tf2onnx is the slow step (5-50 s per conversion)."""
    cached = _FP32.setdefault(model, {})
    key = (opset, batch, _weights_digest(model))
    if key not in cached:
        serving = serving_of(model)
        if serving is not None:  # a Keras 3 graph served as it is: convert the function model.export traces
            signature = serving.tensor_specs(batch)

            def from_source():
                proto, _ = tf2onnx.convert.from_function(serving.function(batch), input_signature=signature,
                                                         opset=opset)
                return _outputs_ordered(proto, serving.output_names)
        else:
            signature = [tf.TensorSpec((batch,) + tuple(t.shape[1:]), t.dtype, name=name)
                         for t, name in zip(model.inputs, input_names(model))]

            def from_source():
                return tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)[0]
        try:
            with quiet_stderr():
                try:
                    with _optimizer_errors_raised():
                        proto = from_source()
                except Exception:  # an optimizer pass failed: tf2onnx's default skips that pass and goes on
                    proto = from_source()
        except Exception as e:
            raise UserError(f"tf2onnx conversion failed: {(str(e).strip().splitlines() or [''])[0][:300]}") from None
        finally:
            gc.collect()  # tf2onnx's graphs are reference cycles holding every weight: free them now, not later
        cached.clear()  # only the latest weights' graph is worth keeping
        cached[key] = check(rewrite(proto.SerializeToString())[0])
    return cached[key]


def _outputs_ordered(proto, names: list[str]):
    """The graph's outputs in the model's order (tf2onnx lists a function's named outputs sorted by name)."""
    by_name = {o.name: o for o in proto.graph.output}
    if set(by_name) == set(names):
        ordered = [onnx.ValueInfoProto() for _ in names]
        for copy, name in zip(ordered, names):
            copy.CopyFrom(by_name[name])
        del proto.graph.output[:]
        proto.graph.output.extend(ordered)
    return proto


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _optimizer_errors_raised():
    """tf2onnx deep-copies the whole graph before each optimizer pass so that a failing pass can be skipped; the
    copies are garbage cycles that pile up until the collector runs: resnet50 peaked at 7.9 GB and took 15 s, and
    6 s at 4.6 GB without them. The switch is tf2onnx's own environment variable."""
    name = constants.ENV_TF2ONNX_CATCH_ERRORS
    with _ENV_LOCK:
        before = os.environ.get(name)
        os.environ[name] = "FALSE"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def convert(model, recipe: QuantRecipe | None = None, calibration: Inputs | None = None,
            opset: int = DEFAULT_OPSET, batch: int | None = None) -> bytes:
    """fp32 ONNX via tf2onnx, then float16 or ONNX Runtime quantization when the recipe asks for it."""
    recipe = recipe or QuantRecipe("onnx", "fp32")
    data = fp32_graph(model, opset, batch)
    if recipe.mode == "fp32":
        return _without_inferred_shapes(data) if serving_of(model) is not None else data
    if recipe.mode == "float16":
        half = OnnxModel(convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True))
        half.topological_sort()  # the converter appends the I/O casts out of order
        return check(half.model.SerializeToString())
    built = None
    if recipe.mode == "int8" and recipe.onnx_int8 == "auto":
        recipe, choice = _resolve_int8(data, recipe, calibration, input_names(model))
        built = choice.built.get(recipe.onnx_int8)
    if built is not None:  # measured just now: the chosen candidate is the file
        return check(built)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "quant.onnx"
        src.write_bytes(data)
        with quiet_stderr():
            quantize_onnx(src, dst, recipe, calibration, input_names(model))
        return check(dst.read_bytes())


def resolve_int8(model, recipe: QuantRecipe, calibration: Inputs | None, opset: int = DEFAULT_OPSET,
                 batch: int | None = None, cache=None):
    """(recipe with a concrete ONNX int8 flavour, Choice or None): ``auto`` becomes the flavour measured for
    this host and model family (export.quantize.int8_choice); an explicit flavour is kept."""
    if (recipe.format, recipe.mode, recipe.onnx_int8) != ("onnx", "int8", "auto"):
        return recipe, None
    return _resolve_int8(fp32_graph(model, opset, batch), recipe, calibration, input_names(model), cache)


def int8_flavour(subject, recipe: QuantRecipe, opset: int | None = None, batch: int | None = None, cache=None):
    """For the CLIs: (recipe with its ONNX int8 flavour, notes saying which and why); other recipes unchanged.

    Resolved before the export so the file's recipe chain names the flavour; the fp32 graph is converted
    once for both steps (cached per model).
    """
    if (recipe.format, recipe.mode) != ("onnx", "int8"):
        return recipe, []
    if recipe.onnx_int8 != "auto":
        return recipe, [f"onnx int8 flavour: {flavour(recipe.onnx_int8)} (chosen with --onnx-int8)"]
    recipe, choice = resolve_int8(subject.model, recipe, recipe.calibration_of(subject), opset or DEFAULT_OPSET, batch,
                                  cache)
    return recipe, [choice.note()]


def _resolve_int8(data: bytes, recipe: QuantRecipe, calibration: Inputs | None, names: list[str], cache=None):
    if calibration is None:
        raise ValueError("int8 quantization needs a calibration sample")
    with tempfile.TemporaryDirectory() as tmp:
        src, ranges = Path(tmp) / "fp32.onnx", Path(tmp) / "ranges.json"
        src.write_bytes(data)

        def build(flavour) -> bytes:
            dst = Path(tmp) / f"{flavour.name}.onnx"
            with quiet_stderr():
                quantize_onnx(src, dst, replace(recipe, onnx_int8=flavour.name), calibration, names,
                              calibration_cache=ranges)
            return dst.read_bytes()

        choice = choose(data, build, calibration_feeds(calibration, names), cache)
    return replace(recipe, onnx_int8=choice.flavour), choice
