"""Post-training quantization recipes for TFLite (converter options) and ONNX Runtime (quantize_*).

Conversion itself lives in ``export``; these functions only say how to quantize.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.spec import Inputs, n_samples, take

TFLITE_MODES = ("fp32", "dynamic", "float16", "int8")
ONNX_MODES = ("fp32", "dynamic", "int8")
MODES = {"tflite": TFLITE_MODES, "onnx": ONNX_MODES}


@dataclass(frozen=True)
class QuantRecipe:
    format: str  # "tflite" | "onnx"
    mode: str = "fp32"

    def __post_init__(self):
        if self.format not in MODES:
            raise ValueError(f"unknown format {self.format!r}; valid: {', '.join(MODES)}")
        if self.mode not in MODES[self.format]:
            raise ValueError(f"mode {self.mode!r} is not available for {self.format}; valid: {', '.join(MODES[self.format])}")

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "int8"

    def __str__(self) -> str:
        return f"{self.format}({self.mode})"


def _samples(calibration: Inputs, input_names: list[str]):
    """Yield single-sample input dicts from a calibration array or dict."""
    for i in range(n_samples(calibration)):
        sample = take(calibration, slice(i, i + 1))
        if not isinstance(sample, dict):
            sample = {input_names[0]: sample}
        yield {k: np.asarray(v) for k, v in sample.items()}


def configure_tflite(converter, recipe: QuantRecipe, calibration: Inputs | None, input_names: list[str]):
    """Set a TFLiteConverter's optimisation options for the recipe (float I/O kept for drop-in use)."""
    import tensorflow as tf  # already imported through models.backend by the caller

    if recipe.mode == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif recipe.mode == "int8":
        if calibration is None:
            raise ValueError("int8 quantization needs a calibration sample")

        def representative():
            for sample in _samples(calibration, input_names):
                yield [sample[name].astype(np.float32) if sample[name].dtype.kind == "f" else sample[name]
                       for name in input_names]

        converter.representative_dataset = representative
    return converter


def quantize_onnx(fp32_path: Path, out_path: Path, recipe: QuantRecipe, calibration: Inputs | None,
                  input_names: list[str]) -> None:
    """ONNX Runtime quantization of an fp32 ONNX file: dynamic (weights int8) or static QDQ int8."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if recipe.mode == "dynamic":
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8)
        return
    if calibration is None:
        raise ValueError("int8 quantization needs a calibration sample")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(list(_samples(calibration, input_names)))

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
