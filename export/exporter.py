"""convert -> validate -> write: the export pipeline the CLIs and the benchmarks share.

Conversion and validation are separate steps (as in Optimum's exporters): ``convert`` only produces
bytes, ``validate`` compares a file against the Keras source, ``export`` strings them together and
writes atomically.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from compress.ptq import QuantRecipe
from models.artifacts import atomic_write_many, sizes_of, write_json
from models.errors import UserError
from models.loading import Subject
from models.rewrites import has_rnn, unrolled
from models.spec import n_samples, signature_of
from models.training import evaluate, keras_predict, random_inputs

from . import metadata, runtime
from .validate import Validation, parity, top1_agreement

SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
N_VALIDATE = 256


def metadata_json(meta: dict) -> str:
    """The sidecar's text (as ``write_json`` writes it)."""
    import json

    return json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"


@dataclass
class Converted:
    data: bytes
    batch: int | None  # None: dynamic batch axis
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    path: Path
    recipe: QuantRecipe
    size: int
    size_gzip: int
    validation: Validation | None
    written: bool
    notes: list[str] = field(default_factory=list)
    failed_check: bool = False


def _calibration(subject: Subject, recipe: QuantRecipe):
    if not recipe.needs_calibration:
        return None
    if subject.spec is not None:
        return subject.spec.calibration(subject.splits, 100)
    return random_inputs(signature_of(subject.model), 100)


def _tflite_batch_problem(data: bytes) -> str | None:
    """None if LiteRT runs this graph resized to a batch of 3 with the same results as one sample at a time.

    Some dynamic-batch graphs resize without error but compute garbage (shape arithmetic folded at
    batch 1), so the probe compares outputs rather than only checking that it runs.
    """
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.tflite"
        path.write_bytes(data)
        try:
            model = runtime.load(path)
            rng = np.random.default_rng(0)
            inputs = {}
            for name, d in model._in.items():
                shape = (3,) + tuple(int(s) for s in d["shape"][1:])
                inputs[name] = (rng.random(shape) if d["dtype"] == np.float32 else np.zeros(shape)).astype(d["dtype"])
            batched = model.predict(inputs)
            single = [model.predict({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(3)]
        except runtime.RuntimeModelError as e:
            return str(e)
    batched = batched if isinstance(batched, list) else [batched]
    single = [s if isinstance(s, list) else [s] for s in single]
    for j, out in enumerate(batched):
        expected = np.concatenate([s[j] for s in single])
        if not np.all(np.isfinite(out)) or not np.allclose(out, expected, atol=1e-5):
            return "resized to a batch of 3 it computes different results than one sample at a time"
    return None


def _convert_tflite(subject, recipe, calibration, batch, allow_flex) -> Converted:
    converted = _convert_tflite_graph(subject, recipe, calibration, batch, allow_flex)
    if has_rnn(subject.model):
        converted.notes.insert(0, "recurrent layers unrolled over their static time axis: TFLite's fused "
                                  "UNIDIRECTIONAL_SEQUENCE_LSTM kernel drifts from Keras (see models/rewrites.py)")
    return converted


def _convert_tflite_graph(subject, recipe, calibration, batch, allow_flex) -> Converted:
    from .tflite import FLEX_WARNING, NeedsFlex, convert

    model = unrolled(subject.model) if has_rnn(subject.model) else subject.model
    if batch:
        try:
            return Converted(convert(model, recipe, calibration, batch=batch), batch)
        except NeedsFlex as e:
            if not allow_flex:
                raise UserError(f"TFLite builtins cannot express this model ({e}); pass --allow-flex to use TF Select "
                                "ops (the app then needs the Flex delegate)") from None
            return Converted(convert(model, recipe, calibration, batch=batch, allow_flex=True), batch,
                             [f"warning: {FLEX_WARNING}"])
    try:
        data = convert(model, recipe, calibration)
    except NeedsFlex as e:
        # RNNs lower to TensorList ops unless every shape is static: a fixed batch of 1 avoids TF Select
        try:
            return Converted(convert(model, recipe, calibration, batch=1), 1,
                             [f"static batch 1: the dynamic-batch graph needs TF Select ops ({e})"])
        except NeedsFlex as e2:
            if not allow_flex:
                raise UserError(f"TFLite builtins cannot express this model ({e2}); pass --allow-flex to use TF "
                                "Select ops (the app then needs the Flex delegate)") from None
            return Converted(convert(model, recipe, calibration, allow_flex=True), None,
                             [f"warning: {FLEX_WARNING}"])
    problem = _tflite_batch_problem(data)
    if problem:
        return Converted(convert(model, recipe, calibration, batch=1), 1,
                         [f"static batch 1: LiteRT cannot resize the dynamic-batch graph ({problem})"])
    return Converted(data, None)


def convert(subject: Subject, recipe: QuantRecipe, opset: int | None = None, batch: int | None = None,
            allow_flex: bool = False) -> Converted:
    calibration = _calibration(subject, recipe)
    if recipe.format == "tflite":
        return _convert_tflite(subject, recipe, calibration, batch, allow_flex)
    from . import onnx as onnx_export

    kwargs = {"opset": opset} if opset else {}
    return Converted(onnx_export.convert(subject.model, recipe, calibration, batch=batch, **kwargs), batch)


def validation_inputs(subject: Subject, n: int = N_VALIDATE):
    if subject.splits is not None:
        return subject.splits.test.head(n).x, "test split"
    return random_inputs(signature_of(subject.model), min(n, 32)), "random inputs (no data for a user model)"


def validate(subject: Subject, path: Path, recipe: QuantRecipe) -> Validation:
    """Per-output parity on real inputs; for quantized files also the task metric and top-1 agreement."""
    inputs, source = validation_inputs(subject)
    reference = keras_predict(subject.model)(inputs)
    exported = runtime.load(path)
    candidate = exported.predict(inputs)
    quantized = recipe.mode != "fp32"
    spec = subject.spec
    result = Validation(n_samples=n_samples(inputs), inputs_from=source,
                        atol=None if quantized else (spec.export_atol if spec else 1e-4),
                        outputs=parity(reference, candidate, list(subject.model.output_names)),
                        top1_agreement=top1_agreement(reference, candidate))
    if spec is not None and quantized:
        result.metric_name = spec.metric.name
        result.metric_source = evaluate(spec, subject.model, subject.splits, subject.config)
        result.metric_export = spec.score(exported.predict, subject.splits.test, subject.config)
    return result


def export(subject: Subject, recipe: QuantRecipe, out: Path, *, opset: int | None = None,
           chain: list[str] | None = None, check: bool = True, batch: int | None = None,
           allow_flex: bool = False, enforce: bool = True) -> ExportResult:
    """Convert, validate a temporary copy, and only then write ``out`` (+ ``out.json``) atomically.

    With ``enforce`` a file that fails its parity check is not written; the numbers are returned either way.
    """
    out = Path(out)
    if out.suffix.lower() != SUFFIX[recipe.format]:
        raise UserError(f"output {out} must end in {SUFFIX[recipe.format]} for {recipe.format}")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be a positive integer or 'dynamic', got {batch}")
    converted = convert(subject, recipe, opset, batch, allow_flex)
    meta = metadata.describe(subject.model, subject, recipe, (chain or []) + [str(recipe)])
    meta["batch"] = converted.batch
    meta["notes"] = converted.notes
    data = converted.data
    if recipe.format == "onnx":
        data = metadata.embed_onnx(data, meta)
    else:
        meta["quantization_params"] = metadata.quantization_of(data)
        data = metadata.embed_tflite(data, meta)
    validation = None
    if check:
        with tempfile.TemporaryDirectory() as tmp:
            candidate = Path(tmp) / out.name
            candidate.write_bytes(data)
            write_json(Path(str(candidate) + ".json"), meta)
            validation = validate(subject, candidate, recipe)
    failed = validation is not None and not validation.passed
    written = not (failed and enforce)
    if written:  # the file and its sidecar together, or neither
        atomic_write_many({out: data, Path(str(out) + ".json"): metadata_json(meta)})
    return ExportResult(out, recipe, *sizes_of(data), validation, written,
                        converted.notes, failed)
