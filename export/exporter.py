"""convert -> validate -> write: the export pipeline the CLIs and the benchmarks share.

Conversion and validation are separate steps (as in Optimum's exporters): ``convert`` only produces
bytes, ``validate`` compares a file against the Keras source, ``export`` strings them together and
writes atomically.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.artifacts import atomic_write_many, sizes_of, write_json
from models.datasets.synthetic import first_layer
from models.errors import UserError
from models.spec import n_samples
from models.subject import Subject
from models.training import keras_predict
from models.verdict import judge_subject

from compress.techniques.weight_algos import pipeline as weight_algos

from export import metadata, runtime
from export import onnx as onnx_export
from export import tflite as tflite_export
from export.memo import ModelMemo
from export.probe import probe
from export.quantize.int8_choice import flavour as flavour_of
from export.quantize.ptq import QuantRecipe
from export.rewrites import (has_rnn, moments_forms_needed, moments_forms, signable_inputs, unrolled,
                             unsignable_input_names)
from export.validate import Validation, parity, runtime_name, top1_agreement

SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
N_VALIDATE = 256


def metadata_json(meta: dict) -> str:
    """The sidecar's text (as ``write_json`` writes it)."""
    return json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"


@dataclass
class Converted:
    data: bytes
    batch: int | None  # None: dynamic batch axis
    notes: list[str] = field(default_factory=list)
    flex: bool = False  # uses TF Select ops (LiteRT alone cannot run it)


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


def _tflite_batch_problem(data: bytes) -> str | None:
    """None if LiteRT runs this graph resized to a batch of 3 with the same results as one sample at a time.

    Checked in the probe's child process: some converter outputs (a 16x8 LayerNormalization MLP) abort
    LiteRT when resized, which in this process would kill the command with no message.
    """
    return _probe_bytes(data, batch_check=True)


def _probe_bytes(data: bytes, batch_check: bool) -> str | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.tflite"
        path.write_bytes(data)
        (result,) = probe([path], batch_check=batch_check)
    if result.ok:
        return None
    return result.error.replace(f"{path}: ", "").replace(str(path), "it at a batch of 3" if batch_check else "it")


def _convert_tflite(subject, recipe, calibration, batch, allow_flex) -> Converted:
    model, notes = _tflite_source(subject.model, recipe)
    converted = _convert_tflite_graph(model, recipe, calibration, batch, allow_flex)
    converted.notes[:0] = notes
    problem = converted.batch and not converted.flex and _tflite_run_problem(converted.data)
    if problem:
        raise UserError(f"LiteRT cannot run the {recipe} file the converter wrote: {problem}")
    return converted


def _tflite_source(model, recipe: QuantRecipe):
    """The form of ``model`` to convert (see export/rewrites.py), with a note for each rewrite."""
    notes, original = [], model
    odd = unsignable_input_names(original)
    if odd and len(original.inputs) > 1:  # data and apps feed several inputs by name: renaming would break both
        raise UserError(f"TFLite signatures cannot carry the input name(s) {', '.join(map(repr, odd))} (TensorFlow "
                        "allows letters, digits and . _ - /): rename those keras.Input layers and save the model "
                        "again (ONNX export takes them as they are)")
    if odd:
        model = _SOURCE.get(original, "signable", lambda: signable_inputs(original))
        notes.append(f"the input {odd[0]!r} is named {model.input_names[0]!r} in the .tflite file: TFLite signatures "
                     "cannot carry spaces or ':'")
    if has_rnn(model):
        source = model
        model = _SOURCE.get(original, ("unrolled", source is not original), lambda: unrolled(source))
        notes.append("recurrent layers unrolled over their static time axis: TFLite's fused "
                     "UNIDIRECTIONAL_SEQUENCE_LSTM kernel drifts from Keras (see export/rewrites.py)")
    forms = moments_forms_needed(model, recipe.mode)
    if forms:
        source = model  # the memo holds one model: key every form by the original
        model = _SOURCE.get(original, ("moments", recipe.mode, bool(odd), has_rnn(original)),
                            lambda: moments_forms(source, recipe.mode))
        notes.append(f"{', '.join(forms)} computed from its moments for {recipe.mode}: LiteRT cannot prepare or "
                     "calibrate the form tf_keras lowers it to (see export/rewrites.py)")
    return model, notes


def _tflite_run_problem(data: bytes) -> str | None:
    """None if LiteRT loads this static-batch graph and runs it once (in the probe's child: it may abort)."""
    return _probe_bytes(data, batch_check=False)


def _convert_tflite_graph(model, recipe, calibration, batch, allow_flex) -> Converted:
    if batch:
        try:
            return Converted(tflite_export.convert(model, recipe, calibration, batch=batch), batch)
        except tflite_export.NeedsFlex as e:
            if not allow_flex:
                raise UserError(f"TFLite builtins cannot express this model ({e}); pass --allow-flex to use TF Select "
                                "ops (the app then needs the Flex delegate)") from None
            return Converted(tflite_export.convert(model, recipe, calibration, batch=batch, allow_flex=True), batch,
                             [f"warning: {tflite_export.FLEX_WARNING}"], flex=True)
    try:
        data = tflite_export.convert(model, recipe, calibration)
    except tflite_export.NeedsFlex as e:
        # RNNs lower to TensorList ops unless every shape is static: a fixed batch of 1 avoids TF Select
        try:
            return Converted(tflite_export.convert(model, recipe, calibration, batch=1), 1,
                             [f"static batch 1: the dynamic-batch graph needs TF Select ops ({e})"])
        except tflite_export.NeedsFlex as e2:
            if not allow_flex:
                raise UserError(f"TFLite builtins cannot express this model ({e2}); pass --allow-flex to use TF "
                                "Select ops (the app then needs the Flex delegate)") from None
            return Converted(tflite_export.convert(model, recipe, calibration, allow_flex=True), None,
                             [f"warning: {tflite_export.FLEX_WARNING}"], flex=True)
    problem = _tflite_batch_problem(data)
    if problem:
        return Converted(tflite_export.convert(model, recipe, calibration, batch=1), 1,
                         [f"static batch 1: LiteRT cannot resize the dynamic-batch graph ({problem})"])
    return Converted(data, None)


SPREAD_LIMIT = 8.0  # features whose standard deviations differ more than this cannot share one int8 input scale


def raw_input_normalizers(model) -> dict[str, str]:
    """Normalization layers fed straight from a model input whose features span very different scales, with why.

    Full-integer quantization gives the input tensor one scale: incomes in the 10^4s next to ratios in [0, 1]
    leave the small features no int8 steps at all (a tabular model went from 0.95 to 0.51 accuracy). Keeping
    such a layer in float quantizes after it, on the normalized values.
    """
    found = {}
    for t in model.inputs:
        layer = first_layer(model, t.name.split(":")[0])
        if type(layer).__name__ != "Normalization" or getattr(layer, "variance", None) is None:
            continue
        std = np.sqrt(np.maximum(np.ravel(np.asarray(layer.variance, np.float64)), 1e-30))
        if std.size > 1 and std.max() / std.min() > SPREAD_LIMIT:
            found[layer.name] = (f"it normalizes raw input features whose scales differ {std.max() / std.min():.0f}x "
                                 f"(std {std.min():.3g} to {std.max():.3g})")
    return found


def _keep_raw_normalizers_float(subject: Subject, recipe: QuantRecipe) -> tuple[QuantRecipe, list[str]]:
    if recipe.mode not in ("int8", "16x8"):
        return recipe, []
    found = {k: v for k, v in raw_input_normalizers(subject.model).items() if k not in recipe.exclude}
    if not found:
        return recipe, []
    if recipe.mode == "16x8":  # 16x8 cannot deny-list layers (see QuantRecipe)
        return recipe, [f"warning: {name} stays int16: {why}, which one int16 input scale cannot hold and 16x8 "
                        "cannot keep layers in float (int8 does)" for name, why in found.items()]
    return dataclasses.replace(recipe, exclude=tuple(recipe.exclude) + tuple(found)), [
        f"kept {name} in float: {why}, which one int8 input scale cannot hold" for name, why in found.items()]


def weight_grid(recipe: QuantRecipe) -> tuple[weight_algos.Grid, list[str]]:
    """The int8 grid the converter will put conv/dense kernels on (AdaRound stores its weights on it), with a note
    where it is not known yet."""
    if recipe.format == "onnx":
        if recipe.onnx_int8 == "auto":
            return weight_algos.Grid(127, recipe.per_channel), [
                "weight algorithms: the ONNX int8 flavour was not chosen yet; weights assume the full int8 range "
                "(a reduce_range flavour would re-round AdaRound's weights)"]
        return weight_algos.Grid(64 if flavour_of(recipe.onnx_int8).reduce_range else 127, recipe.per_channel), []
    return weight_algos.Grid(), []


def prepare(subject: Subject, recipe: QuantRecipe) -> tuple[Subject, weight_algos.Result | None, list[str]]:
    """(the subject whose model the file is converted from, the weight algorithms' result, notes): the recipe's
    weight algorithms run on the Keras model once per model, recipe grid and calibration sample."""
    if not recipe.weight_algos:
        return subject, None, []
    grid, notes = weight_grid(recipe)
    calibration = recipe.calibration_of(subject)
    exclude = tuple(recipe.exclude)
    result = _WEIGHT_ALGOS.get(subject.model, ("weight_algos", recipe.weight_algos, grid, exclude),
                         lambda: weight_algos.apply(subject.model, recipe.weight_algos, calibration, grid, exclude,
                                                    seed=subject.seed),
                         guards=(subject.splits,))
    return subject.with_model(result.model), result, notes + result.notes()


def convert(subject: Subject, recipe: QuantRecipe, opset: int | None = None, batch: int | None = None,
            allow_flex: bool = False) -> Converted:
    """The file's bytes; the recipe's weight algorithms (if any) run on the Keras model first (see ``prepare``)."""
    subject, _, algo_notes = prepare(subject, recipe)
    recipe = recipe.without_weight_algos()
    recipe, notes = _keep_raw_normalizers_float(subject, recipe)
    notes = algo_notes + notes
    converted = _convert(subject, recipe, opset, batch, allow_flex)
    converted.notes[:0] = notes
    return converted


def _convert(subject: Subject, recipe: QuantRecipe, opset, batch, allow_flex) -> Converted:
    calibration = recipe.calibration_of(subject)
    if recipe.format == "tflite":
        return _convert_tflite(subject, recipe, calibration, batch, allow_flex)
    kwargs = {"opset": opset} if opset else {}
    return Converted(onnx_export.convert(subject.model, recipe, calibration, batch=batch, **kwargs), batch)


#: the source model's own results, shared by its exports: its unrolled copy, its outputs and its task metric
_SOURCE = ModelMemo()
#: the weight algorithms' results for the source model (a memo of its own: the others move on to the result's model)
_WEIGHT_ALGOS = ModelMemo()


def source_metric(subject: Subject) -> float | None:
    """The Keras model's task metric on the test split, computed once per model (and data) for all its exports."""
    return _SOURCE.get(subject.model, "metric", lambda: subject.score(subject.model),
                       guards=(subject.splits, subject.spec, subject.config))


def validation_inputs(subject: Subject, n: int = N_VALIDATE):
    labelled = subject.metric is not None
    return subject.splits.test.head(n).x, ("test split" if labelled else
                                           "synthetic inputs (no --data: the accuracy is unknown)")


def _source_predict(subject: Subject, model):
    """``model``'s predict, with its predictions on the test split kept for all the source's exports (the gate's
    'before'); another model (QAT's baseline) is predicted afresh."""
    predict = keras_predict(model)
    if model is not subject.model:
        return predict
    test_x = subject.splits.test.x

    def memo(x):
        if x is test_x:
            return _SOURCE.get(model, "test predictions", lambda: predict(x), guards=(subject.splits,))
        return predict(x)

    return memo


def validate(subject: Subject, path: Path, recipe: QuantRecipe, max_drop: float | None = None,
             baseline=None) -> Validation:
    """Per-output parity on the evaluation inputs; for quantized files also the task metric and top-1 agreement.
    With ``max_drop`` the metric goes through the accuracy gate (models.verdict), against ``baseline`` (a Keras
    model; default the subject's own)."""
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
        if max_drop is not None:
            verdict = judge_subject(subject, _source_predict(subject, baseline or subject.model), exported.predict,
                                    max_drop, before_label="keras fp32", after_label=str(recipe))
            result.verdict = verdict
            result.metric_source, result.metric_export = verdict.before, verdict.after
        else:
            result.metric_source = source_metric(subject) if baseline is None else subject.score(baseline)
            result.metric_export = subject.score_predict(exported.predict)
        result.metric_n_samples = n_samples(subject.splits.test.x)
        result.runtime = runtime_name(exported)
    return result


def export(subject: Subject, recipe: QuantRecipe, out: Path, *, opset: int | None = None,
           chain: list[str] | None = None, check: bool = True, batch: int | None = None,
           allow_flex: bool = False, enforce: bool = True, max_drop: float | None = None,
           baseline=None) -> ExportResult:
    """Convert, validate a temporary copy, and only then write ``out`` (+ ``out.json``) atomically.

    With ``enforce`` a file that fails its parity check, or the accuracy gate with ``max_drop`` (against
    ``baseline``, a Keras model; default the subject's own), is not written; the numbers are returned either way.
    The sidecar (only) also keeps the validation's figures under ``validation`` (see Validation.record), so a
    sweep can reuse the file's metric instead of scoring it again on the same runtime.
    """
    out = Path(out)
    if out.suffix.lower() != SUFFIX[recipe.format]:
        raise UserError(f"output {out} must end in {SUFFIX[recipe.format]} for {recipe.format}")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be a positive integer or 'dynamic', got {batch}")
    source = subject
    subject, algos, _ = prepare(source, recipe)
    converted = convert(source, recipe, opset, batch, allow_flex)
    steps = algos.ran if algos else []
    meta = metadata.describe(subject.model, source, recipe, (chain or []) + steps + [str(recipe.without_weight_algos())])
    if algos is not None:
        meta["weight_algos"] = algos.record()
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
            # the accuracy gate judges against the model given (QAT's baseline), else the model before the weight
            # algorithms changed it: what the user would otherwise ship
            original = baseline if baseline is not None else (source.model if source is not subject else None)
            validation = validate(subject, candidate, recipe, max_drop, original)
    if validation is not None:  # the sweep reuses metric_export when it would score this file on the same runtime
        meta["validation"] = {**validation.record(), "file_sha256": hashlib.sha256(data).hexdigest()}
    failed = validation is not None and not validation.passed
    written = not (failed and enforce)
    if written:  # the file and its sidecar together, or neither
        atomic_write_many({out: data, Path(str(out) + ".json"): metadata_json(meta)})
    return ExportResult(out, recipe, *sizes_of(data), validation, written,
                        converted.notes, failed)
