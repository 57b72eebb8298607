"""convert -> write atomically -> validate: the export pipeline the CLI and the benchmarks share."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from compress.ptq import QuantRecipe
from models.artifacts import atomic_write, write_json
from models.errors import UserError
from models.loading import Subject
from models.spec import n_samples
from models.training import keras_predict, random_inputs

from . import metadata, runtime
from .validate import Validation, parity, top1_agreement

SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
N_VALIDATE = 256


@dataclass
class ExportResult:
    path: Path
    recipe: QuantRecipe
    size: int
    size_gzip: int
    validation: Validation | None
    written: bool


def convert(subject: Subject, recipe: QuantRecipe, opset: int | None = None) -> bytes:
    model = subject.model
    calibration = None
    if recipe.needs_calibration:
        if subject.spec is not None:
            calibration = subject.spec.calibration(subject.splits, 100)
        else:
            from models.spec import signature_of

            calibration = random_inputs(signature_of(model), 100)
    if recipe.format == "tflite":
        from . import tflite

        return tflite.convert(model, recipe, calibration)
    from . import onnx as onnx_export

    kwargs = {"opset": opset} if opset else {}
    return onnx_export.convert(model, recipe, calibration, **kwargs)


def validation_inputs(subject: Subject, n: int = N_VALIDATE):
    from models.spec import signature_of

    if subject.splits is not None:
        return subject.splits.test.head(n).x, "test split"
    return random_inputs(signature_of(subject.model), min(n, 32)), "random inputs (no data for a user model)"


def validate(subject: Subject, path: Path, recipe: QuantRecipe) -> Validation:
    inputs, source = validation_inputs(subject)
    reference = keras_predict(subject.model)(inputs)
    exported = runtime.load(path)
    candidate = exported.predict(inputs)
    quantized = recipe.mode != "fp32"
    spec = subject.spec
    result = Validation(n_samples=n_samples(inputs), inputs_from=source, atol=None if quantized else (spec.export_atol if spec else 1e-4),
                        outputs=parity(reference, candidate, list(subject.model.output_names)),
                        top1_agreement=top1_agreement(reference, candidate))
    if spec is not None and quantized:
        result.metric_name = spec.metric.name
        result.metric_source = spec.score(keras_predict(subject.model), subject.splits.test, subject.config)
        result.metric_export = spec.score(exported.predict, subject.splits.test, subject.config)
    return result


def export(subject: Subject, recipe: QuantRecipe, out: Path, *, opset: int | None = None,
           chain: list[str] | None = None, check: bool = True) -> ExportResult:
    """Convert, validate a temporary copy, and only then write ``out`` (+ ``out.json``) atomically.

    A file that fails its parity check is not written; the numbers are returned either way.
    """
    out = Path(out)
    if out.suffix.lower() != SUFFIX[recipe.format]:
        raise UserError(f"output {out} must end in {SUFFIX[recipe.format]} for {recipe.format}")
    data = convert(subject, recipe, opset)
    meta = metadata.describe(subject.model, subject, recipe, (chain or []) + [str(recipe)])
    if recipe.format == "onnx":
        data = metadata.embed_onnx(data, meta)
    validation = None
    if check:
        with tempfile.TemporaryDirectory() as tmp:
            candidate = Path(tmp) / out.name
            candidate.write_bytes(data)
            write_json(Path(str(candidate) + ".json"), meta)
            validation = validate(subject, candidate, recipe)
    written = validation is None or validation.passed
    if written:
        atomic_write(out, data)
        write_json(Path(str(out) + ".json"), meta)
    raw, gz = sizes_of(data)
    return ExportResult(out, recipe, raw, gz, validation, written)


def sizes_of(data: bytes) -> tuple[int, int]:
    import gzip

    return len(data), len(gzip.compress(data, compresslevel=9, mtime=0))
