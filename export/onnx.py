"""Keras -> ONNX conversion with tf2onnx, keeping the Keras input and output names; checker and shape
inference run on every file produced."""
from __future__ import annotations

import hashlib
import tempfile
import weakref
from pathlib import Path

import numpy as np

from compress.ptq import QuantRecipe, quantize_onnx
from models.backend import quiet_stderr, tf
from models.errors import UserError
from models.spec import Inputs

DEFAULT_OPSET = 17


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def check(data: bytes) -> bytes:
    """ONNX checker + shape inference; returns the model with inferred shapes."""
    import onnx

    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True)
    except Exception as e:
        raise UserError(f"the ONNX file fails the checker: {(str(e).strip().splitlines() or [''])[0][:300]}") from None
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
    import tf2onnx

    cached = _FP32.setdefault(model, {})
    key = (opset, batch, _weights_digest(model))
    if key not in cached:
        signature = [tf.TensorSpec((batch,) + tuple(t.shape[1:]), t.dtype, name=name)
                     for t, name in zip(model.inputs, input_names(model))]
        try:
            with quiet_stderr():
                proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
        except Exception as e:
            raise UserError(f"tf2onnx conversion failed: {(str(e).strip().splitlines() or [''])[0][:300]}") from None
        cached.clear()  # only the latest weights' graph is worth keeping
        cached[key] = check(proto.SerializeToString())
    return cached[key]


def convert(model, recipe: QuantRecipe | None = None, calibration: Inputs | None = None,
            opset: int = DEFAULT_OPSET, batch: int | None = None) -> bytes:
    """fp32 ONNX via tf2onnx, then float16 or ONNX Runtime quantization when the recipe asks for it."""
    recipe = recipe or QuantRecipe("onnx", "fp32")
    data = fp32_graph(model, opset, batch)
    if recipe.mode == "fp32":
        return data
    if recipe.mode == "float16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        half = OnnxModel(convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True))
        half.topological_sort()  # the converter appends the I/O casts out of order
        return check(half.model.SerializeToString())
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "quant.onnx"
        src.write_bytes(data)
        with quiet_stderr():
            quantize_onnx(src, dst, recipe, calibration, input_names(model))
        return check(dst.read_bytes())
