"""Keras -> TFLite conversion (no validation here; see export.validate)."""
from __future__ import annotations

import tempfile

from models.backend import quiet_stderr, tf
from models.errors import UserError
from models.engines.native import savedmodel_dir, serving_of
from models.spec import Inputs

from export.memo import ModelMemo
from export.quantize.ptq import QuantRecipe, configure_tflite
from export.rewrites import with_static_batch

FLEX_WARNING = ("uses TF Select (Flex) ops: the app must link the Flex delegate "
                "(tensorflow-lite-select-tf-ops), which adds several MB")


class NeedsFlex(Exception):
    """The model has ops that TFLite builtins cannot express."""


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


#: the graphs saved for the model being converted: one SavedModel per batch setting, shared by every mode
_SAVED = ModelMemo()


def _saved_model(model, batch: int | None):
    """``model`` (with its batch axis fixed to ``batch``) traced and saved once, as ``from_keras_model`` does on
    every call (its SavedModel path); None when saving fails (the converter then freezes the Keras model)."""

    serving = serving_of(model)

    def save():
        if serving is not None:  # a Keras 3 graph served as it is: the SavedModel model.export writes
            try:
                with quiet_stderr():
                    return savedmodel_dir(serving, batch)
            except Exception as e:  # noqa: BLE001 - no tf_keras model to fall back on
                raise UserError(f"Keras 3 cannot save its traced function for TFLite: {_first_error(str(e))}") from None
        source = with_static_batch(model, batch) if batch else model
        tmp = tempfile.TemporaryDirectory(prefix="ct-tflite-")
        try:
            with quiet_stderr():
                tf.saved_model.save(source, tmp.name, options=tf.saved_model.SaveOptions(save_debug_info=True))
        except Exception:  # noqa: BLE001 - the same fallback as TFLiteKerasModelConverterV2
            tmp.cleanup()
            return None
        return tmp

    return _SAVED.get(model, ("saved", batch), save)


def _converter(model, batch: int | None):
    saved = _saved_model(model, batch)
    if saved is not None:
        try:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved.name)
        except Exception as e:  # noqa: BLE001 - a graph that saves but does not load back: convert from Keras
            if serving_of(model) is not None:
                raise UserError(f"TFLite cannot read the SavedModel of the Keras 3 function: {_first_error(str(e))}") \
                    from None
        else:
            _as_from_keras(converter)
            return converter
    return tf.lite.TFLiteConverter.from_keras_model(with_static_batch(model, batch) if batch else model)


def _as_from_keras(converter) -> None:
    """Record "Keras model" as the source in the file's conversion metadata, as ``from_keras_model`` does: the
    only byte in which the two paths' files differ."""
    try:
        # guarded: a library that fails to import is reported, not raised
        from tensorflow.lite.python import conversion_metadata_schema_py_generated as fb

        converter._metadata.environment.modelType = fb.ModelType.KERAS_MODEL
    except (ImportError, AttributeError):  # another TF layout: the files then differ in that one field only
        pass


def convert(model, recipe: QuantRecipe | None = None, calibration: Inputs | None = None, *,
            batch: int | None = None, allow_flex: bool = False) -> bytes:
    """Convert with builtin ops only unless ``allow_flex``; ``batch`` fixes the batch axis (None: dynamic)."""
    recipe = recipe or QuantRecipe("tflite", "fp32")
    converter = _converter(model, batch)
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
