"""Keras -> TFLite conversion (no validation here; see export.validate)."""
from __future__ import annotations

from compress.ptq import QuantRecipe, configure_tflite
from models.backend import quiet_stderr, tf
from models.errors import UserError
from models.rewrites import with_static_batch
from models.spec import Inputs

FLEX_WARNING = ("uses TF Select (Flex) ops: the app must link the Flex delegate "
                "(tensorflow-lite-select-tf-ops), which adds several MB")


class NeedsFlex(Exception):
    """The model has ops that TFLite builtins cannot express."""


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def convert(model, recipe: QuantRecipe | None = None, calibration: Inputs | None = None, *,
            batch: int | None = None, allow_flex: bool = False) -> bytes:
    """Convert with builtin ops only unless ``allow_flex``; ``batch`` fixes the batch axis (None: dynamic)."""
    recipe = recipe or QuantRecipe("tflite", "fp32")
    source = with_static_batch(model, batch) if batch else model
    converter = tf.lite.TFLiteConverter.from_keras_model(source)
    configure_tflite(converter, recipe, calibration, input_names(model))
    if allow_flex:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        converter._experimental_lower_tensor_list_ops = False
    try:
        with quiet_stderr():
            return converter.convert()
    except Exception as e:  # ConverterError carries MLIR diagnostics; keep the first meaningful line
        text = str(e)
        if "Select TF ops" in text or "SELECT_TF_OPS" in text or "TensorList" in text:
            raise NeedsFlex(_first_error(text)) from None
        raise UserError(f"TFLite conversion failed: {_first_error(text)}") from None


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()[:300]
    return (text.strip().splitlines() or ["unknown error"])[0][:300]
