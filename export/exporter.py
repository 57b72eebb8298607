"""convert -> validate -> write: the export pipeline the CLIs and the benchmarks share.

Conversion and validation are separate steps (as in Optimum's exporters): ``convert`` only produces
bytes, ``validate`` compares a file against the Keras source, ``export`` strings them together and
writes atomically.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from compress.ptq import QuantRecipe
from models.artifacts import atomic_write_many, sizes_of, write_json
from models.errors import UserError
from models.loading import Subject
from models.rewrites import has_rnn, unrolled
from models.spec import n_samples
from models.training import keras_predict

from . import metadata, runtime
from .memo import ModelMemo
from .validate import Validation, parity, runtime_name, top1_agreement

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
    return subject.calibration(100) if recipe.needs_calibration else None


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

    model = _SOURCE.get(subject.model, "unrolled", lambda: unrolled(subject.model)) if has_rnn(subject.model) \
        else subject.model
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


SPREAD_LIMIT = 8.0  # features whose standard deviations differ more than this cannot share one int8 input scale


def raw_input_normalizers(model) -> dict[str, str]:
    """Normalization layers fed straight from a model input whose features span very different scales, with why.

    Full-integer quantization gives the input tensor one scale: incomes in the 10^4s next to ratios in [0, 1]
    leave the small features no int8 steps at all (a tabular model went from 0.95 to 0.51 accuracy). Keeping
    such a layer in float quantizes after it, on the normalized values.
    """
    import numpy as np

    from models.synthetic import first_layer

    found = {}
    for t in model.inputs:
        layer = first_layer(model, t.name.split(":")[0])
        if type(layer).__name__ != "Normalization" or getattr(layer, "variance", None) is None:
            continue
        std = np.sqrt(np.maximum(np.ravel(np.asarray(layer.variance, np.float64)), 1e-30))
        if std.size > 1 and std.max() / std.min() > SPREAD_LIMIT:
            found[layer.name] = (f"kept {layer.name} in float: it normalizes raw input features whose scales differ "
                                 f"{std.max() / std.min():.0f}x (std {std.min():.3g} to {std.max():.3g}), which one "
                                 "int8 input scale cannot hold")
    return found


def _keep_raw_normalizers_float(subject: Subject, recipe: QuantRecipe) -> tuple[QuantRecipe, list[str]]:
    import dataclasses

    if recipe.mode != "int8":
        return recipe, []
    found = {k: v for k, v in raw_input_normalizers(subject.model).items() if k not in recipe.exclude}
    if not found:
        return recipe, []
    return dataclasses.replace(recipe, exclude=tuple(recipe.exclude) + tuple(found)), list(found.values())


def convert(subject: Subject, recipe: QuantRecipe, opset: int | None = None, batch: int | None = None,
            allow_flex: bool = False) -> Converted:
    recipe, notes = _keep_raw_normalizers_float(subject, recipe)
    converted = _convert(subject, recipe, opset, batch, allow_flex)
    converted.notes[:0] = notes
    return converted


def _convert(subject: Subject, recipe: QuantRecipe, opset, batch, allow_flex) -> Converted:
    calibration = _calibration(subject, recipe)
    if recipe.format == "tflite":
        return _convert_tflite(subject, recipe, calibration, batch, allow_flex)
    from . import onnx as onnx_export

    kwargs = {"opset": opset} if opset else {}
    return Converted(onnx_export.convert(subject.model, recipe, calibration, batch=batch, **kwargs), batch)


#: the source model's own results, shared by its exports: its unrolled copy, its outputs and its task metric
_SOURCE = ModelMemo()


def source_metric(subject: Subject) -> float | None:
    """The Keras model's task metric on the test split, computed once per model (and data) for all its exports."""
    return _SOURCE.get(subject.model, "metric", lambda: subject.score(subject.model),
                       guards=(subject.splits, subject.spec, subject.config))


def validation_inputs(subject: Subject, n: int = N_VALIDATE):
    labelled = subject.metric is not None
    return subject.splits.test.head(n).x, ("test split" if labelled else
                                           "synthetic inputs (no --data: the accuracy is unknown)")


def validate(subject: Subject, path: Path, recipe: QuantRecipe, max_drop: float | None = None) -> Validation:
    """Per-output parity on the evaluation inputs; for quantized files also the task metric (judged against
    ``max_drop`` when given) and top-1 agreement."""
    inputs, source = validation_inputs(subject)
    reference = _SOURCE.get(subject.model, ("reference", n_samples(inputs)),
                            lambda: keras_predict(subject.model)(inputs), guards=(subject.splits,))
    exported = runtime.load(path)
    candidate = exported.predict(inputs)
    quantized = recipe.mode != "fp32"
    result = Validation(n_samples=n_samples(inputs), inputs_from=source,
                        atol=None if quantized else subject.spec.export_atol,
                        outputs=parity(reference, candidate, list(subject.model.output_names)),
                        top1_agreement=top1_agreement(reference, candidate))
    if subject.metric is not None:
        result.metric_name = subject.metric.name
        result.higher_is_better = subject.metric.higher_is_better
        result.max_drop = max_drop
        result.metric_source = source_metric(subject)
        result.metric_export = subject.score_predict(exported.predict)
        result.metric_n_samples = n_samples(subject.splits.test.x)
        result.runtime = runtime_name(exported)
    return result


def export(subject: Subject, recipe: QuantRecipe, out: Path, *, opset: int | None = None,
           chain: list[str] | None = None, check: bool = True, batch: int | None = None,
           allow_flex: bool = False, enforce: bool = True, max_drop: float | None = None) -> ExportResult:
    """Convert, validate a temporary copy, and only then write ``out`` (+ ``out.json``) atomically.

    With ``enforce`` a file that fails its parity check is not written; the numbers are returned either way.
    The sidecar (only) also keeps the validation's figures under ``validation`` (see Validation.record), so a
    sweep can reuse the file's metric instead of scoring it again on the same runtime.
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
            validation = validate(subject, candidate, recipe, max_drop)
    if validation is not None:  # the sweep reuses metric_export when it would score this file on the same runtime
        meta["validation"] = {**validation.record(), "file_sha256": hashlib.sha256(data).hexdigest()}
    failed = validation is not None and not validation.passed
    written = not (failed and enforce)
    if written:  # the file and its sidecar together, or neither
        atomic_write_many({out: data, Path(str(out) + ".json"): metadata_json(meta)})
    return ExportResult(out, recipe, *sizes_of(data), validation, written,
                        converted.notes, failed)
