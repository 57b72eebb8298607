"""Keras -> TFLite conversion (no validation here; see export.validate)."""
from __future__ import annotations

from compress.ptq import QuantRecipe, configure_tflite
from models.backend import quiet_stderr, tf
from models.spec import Inputs


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def convert(model, recipe: QuantRecipe | None = None, calibration: Inputs | None = None) -> bytes:
    recipe = recipe or QuantRecipe("tflite", "fp32")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure_tflite(converter, recipe, calibration, input_names(model))
    with quiet_stderr():
        return converter.convert()
