"""Keras -> ONNX conversion with tf2onnx, keeping the Keras input and output names."""
from __future__ import annotations

import tempfile
from pathlib import Path

from compress.ptq import QuantRecipe, quantize_onnx
from models.backend import quiet_stderr, tf
from models.spec import Inputs

DEFAULT_OPSET = 17


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def convert(model, recipe: QuantRecipe | None = None, calibration: Inputs | None = None,
            opset: int = DEFAULT_OPSET) -> bytes:
    """fp32 ONNX via tf2onnx, then ONNX Runtime quantization when the recipe asks for it."""
    import tf2onnx

    recipe = recipe or QuantRecipe("onnx", "fp32")
    signature = [tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype, name=name)
                 for t, name in zip(model.inputs, input_names(model))]
    with quiet_stderr():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    data = proto.SerializeToString()
    if recipe.mode == "fp32":
        return data
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "quant.onnx"
        src.write_bytes(data)
        with quiet_stderr():
            quantize_onnx(src, dst, recipe, calibration, input_names(model))
        return dst.read_bytes()
