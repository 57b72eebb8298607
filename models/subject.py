"""What every command works on: a model, its data and its metric, from a zoo name or the user's own files.

A zoo name brings its spec's dataset and metric; a user file brings ``--data`` (or synthetic inputs shaped
by what the model declares, with the metric unknown) and ``--metric`` (or one inferred from the file's
compile config). Both become the same :class:`Subject`, with a :class:`~models.spec.ModelSpec` either way,
so compress, export and benchmarks never ask which it was.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

from models import registry
from models import metrics
from models.artifacts import key_of, sha256_file
from models.datasets import user_data
from models.datasets.synthetic import describe_range, synthetic_inputs
from models.errors import UserError
from models.engines.keras3 import keras3
from models.loading import _looks_like_path, compile_config, import_custom_objects, load_model_file
from models.spec import Metric, ModelSpec, Split, Splits, n_samples, signature_of

SYNTHETIC_CALIBRATION = 128
SYNTHETIC_EVAL = 32


@dataclass(frozen=True)
class Source:
    """Where a subject comes from: the command-line arguments, in a form a child process can be sent."""

    model: str
    data: str | None = None
    eval_data: str | None = None
    metric: str | None = None
    label: str | None = None
    custom_objects: str | None = None
    unsafe: bool = False
    tiny: bool = False
    seed: int = 0
    cache: str | None = None

    @classmethod
    def from_args(cls, args, model: str | None = None) -> "Source":
        get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        return cls(model or args.model, get("data"), get("eval_data"), get("metric"), get("label"),
                   get("custom_objects"), bool(get("unsafe", False)), bool(get("tiny", False)), get("seed", 0) or 0,
                   None if get("cache_dir") is None else str(get("cache_dir")))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Subject:
    """A model (tf_keras; bridged when the file was written by Keras 3), its spec, data and metric."""

    name: str
    model: object
    path: Path
    spec: ModelSpec | None = None
    config: dict | None = None
    splits: Splits | None = None
    seed: int = 0
    keras: str = "tf_keras"  # which Keras wrote the file: results in Keras format are written back in it
    data_from: str = ""
    metric_from: str = ""
    notes: list[str] = field(default_factory=list)
    custom_objects: dict = field(default_factory=dict)
    #: the evaluation split is a hold-out of --data, which may be the data the model was trained on
    holdout_of_data: bool = False
    why_native: str = ""  # keras "keras3_native": why the tf_keras bridge could not rebuild the Keras 3 graph

    def techniques_refused(self, step: str | None = None) -> str | None:
        """Why techniques built on tfmot (pruning, clustering, channel pruning, QAT) cannot run on this model, in
        one line (None: they can try); with ``step``, the shorter form for one candidate of a search."""
        if self.keras != "keras3_native":
            return None
        if step:
            return (f"not tried: {step} needs tf_keras layers (tfmot), and the tf_keras bridge cannot rebuild this "
                    f"Keras 3 graph ({self.why_native})")
        return (f"{self.path.name} is a Keras 3 graph the tf_keras bridge cannot rebuild ({self.why_native}); "
                "pruning, clustering, channel pruning and QAT need tf_keras layers (tfmot works on nothing else): "
                "export, quantize and benchmarks take the model as it is")

    @property
    def metric(self) -> Metric | None:
        """The task metric, or None when there are no labels to compute it (synthetic inputs, an .npy)."""
        if self.spec is None or self.spec.metric is None or self.splits is None:
            return None
        if self.splits.test.y is None and self.spec.score_fn is None:
            return None
        return self.spec.metric

    def score(self, model) -> float | None:
        """The task metric of a Keras model on the evaluation split (None without labels)."""
        from models.training import keras_predict  # deferred: models.training loads TensorFlow

        return self.score_predict(keras_predict(model))

    def score_predict(self, predict) -> float | None:
        if self.metric is None:
            return None
        return self.spec.score(predict, self.splits.test, self.config or {})

    def calibration(self, n: int = 100):
        return self.spec.calibration(self.splits, min(n, n_samples(self.splits.train.x)))

    def with_model(self, model) -> "Subject":
        return dataclasses.replace(self, model=model)

    def describe(self) -> list[str]:
        """What the output says about where the model, data and metric came from."""
        lines = list(self.notes)
        if self.data_from:
            lines.append(f"data: {self.data_from}")
        if self.metric_from:
            lines.append(f"metric: {self.metric_from}")
        return lines


# ------------------------------------------------------------------------------------------------- content key

def content_key(src: Source) -> str:
    """What a subject's results depend on, by content (16 hex digits): the model file's bytes (a SavedModel's
    every file, by relative name), the ``--data`` and ``--eval-data`` (an image folder's files too), the label
    column, the hold-out seed, the metric's definition and the ``--custom-objects`` code. Re-saving a model or its
    data under the same names, or choosing another metric, gives another key; a zoo name is keyed by its name and
    configuration here (its trained file's name carries the weights' key)."""
    zoo = src.model in registry.names()
    metric = metrics.by_name(src.metric) if src.metric else None
    return key_of({
        "model": {"zoo": src.model, "tiny": src.tiny} if zoo else _digest(src.model),
        "data": _digest(src.data), "eval_data": _digest(src.eval_data), "label": src.label, "seed": src.seed,
        "metric": src.metric if metric is None else
        {"name": metric.name, "higher_is_better": metric.higher_is_better,
         "fn": f"{getattr(metric.fn, '__module__', '')}.{getattr(metric.fn, '__qualname__', repr(metric.fn))}"},
        "custom_objects": _code_digest(src.custom_objects)})


def _digest(path: str | None) -> str | None:
    return None if not path else sha256_file(path) if Path(path).exists() else f"missing:{path}"


def _code_digest(ref: str | None) -> str | None:
    """The ``--custom-objects`` code's content: a .py file's bytes, or the file of a module given by name."""
    if not ref or Path(ref).exists():
        return _digest(ref)
    try:
        origin = getattr(importlib.util.find_spec(ref), "origin", None)
    except (ImportError, ValueError):
        origin = None
    return f"{ref}:{sha256_file(origin)}" if origin and Path(origin).is_file() else ref


# -------------------------------------------------------------------------------------------- custom objects

# -------------------------------------------------------------------------------------------------- resolving

def resolve(arg, tiny: bool = False, seed: int = 0, cache=None, unsafe: bool = False, **source) -> Subject:
    """A zoo name is trained on demand (cached); anything path-like is loaded from disk with its data."""
    src = arg if isinstance(arg, Source) else Source(str(arg), tiny=tiny, seed=seed, unsafe=unsafe,
                                                     cache=None if cache is None else str(cache), **source)
    if src.model in registry.names():
        return _zoo(src)
    if _looks_like_path(src.model):
        return _user_file(src)
    registry.get(src.model)  # raises "unknown model ...; valid: ..."
    raise AssertionError("unreachable")


def train_ahead(src: Source) -> None:
    """Train a zoo source now and cache it on disk, so that resolving it later only loads it (a sweep trains the
    next model while the current one's variants build). A model file needs nothing."""
    if src.model in registry.names():
        from models.training import train  # deferred: models.training loads TensorFlow

        train(registry.get(src.model), tiny=src.tiny, seed=src.seed, cache=src.cache)


def _zoo(src: Source) -> Subject:
    from models.training import train  # deferred: models.training loads TensorFlow

    spec = registry.get(src.model)
    trained = train(spec, tiny=src.tiny, seed=src.seed, cache=src.cache)
    model = trained.load()
    splits, data_from = trained.splits(), f"the zoo's {spec.name} dataset (test split for the metric)"
    if src.data:
        splits, data_from = _user_splits(src, model)
    spec, metric_from = _with_metric(spec, src.metric, model, {}, splits, own_data=not src.data)
    return Subject(spec.name, model, trained.path, spec, trained.config, splits, src.seed,
                   holdout_of_data=bool(src.data and not src.eval_data),
                   data_from=data_from, metric_from=metric_from or f"{spec.metric.name} (the zoo model's task metric)")


def _user_file(src: Source) -> Subject:
    custom = import_custom_objects(src.custom_objects)
    path = Path(src.model)
    loaded = load_model_file(path, unsafe=src.unsafe, custom_objects=custom)
    model = loaded.model
    notes = []
    if loaded.keras == "keras3":
        notes.append(f"{path.name}: written by Keras 3 (keras {keras3().__version__}); bridged to tf_keras for the "
                     "toolkit (outputs checked equal), Keras results are written back as Keras 3 files")
    elif loaded.keras == "keras3_native":
        notes.append(f"{path.name}: written by Keras 3 (keras {keras3().__version__}); served as Keras 3 traces it "
                     f"(its model.export function), because the tf_keras bridge cannot rebuild it: "
                     f"{loaded.why_native}; exports, quantization and benchmarks work on it, techniques that need "
                     "tf_keras layers (tfmot) do not")
    elif loaded.keras == "savedmodel":
        notes.append(f"{path.name}: a SavedModel without Keras layers (e.g. Keras 3's model.export), called through "
                     "its serving signature: exports and benchmarks work; pruning, clustering and QAT need the "
                     ".keras file")
    else:
        notes.append(f"{path.name}: a tf_keras model")
    if custom:
        notes.append(f"custom objects from {src.custom_objects}: {', '.join(sorted(custom))}")
    elif src.custom_objects:
        notes.append(f"custom objects: imported {src.custom_objects} (it registers its own Keras classes)")
    # what declares the inputs' ranges and the output activation: the Keras 3 model itself when it is served as is
    layered = loaded.original if loaded.keras == "keras3_native" and getattr(loaded.original, "outputs", None) \
        else model
    if src.data:
        splits, data_from = _user_splits(src, model)
    elif src.metric:
        raise UserError(f"--metric {src.metric} needs labelled data: pass --data FILE (an .npz with x and y, a .csv "
                        "with --label, or an image folder)")
    else:
        splits, data_from = _synthetic_splits(model, src.seed, layered)
    compiled = compile_config(path)
    loss = _loss_of(model, compiled)
    spec = ModelSpec(name=path.stem, seed_doc="", task="user model", build=_no_build, load_data=_no_build,
                     metric=None, quality_bar=math.nan, config={}, tiny={}, loss=loss,
                     trainable=loss is not None, labels=_class_names(src), notes=str(path))
    spec, metric_from = _with_metric(spec, src.metric, layered, compiled, splits)
    lr = _adam_lr(compiled)
    return Subject(path.stem, model, path, spec, {"lr": lr} if lr else {}, splits, src.seed, keras=loaded.keras,
                   data_from=data_from, metric_from=metric_from, notes=notes, custom_objects=custom,
                   holdout_of_data=bool(src.data and not src.eval_data), why_native=loaded.why_native)


#: optimizers whose learning rate means what it means to Adam (what fine-tuning runs): only theirs is reused
ADAM_LIKE = ("adam", "adamw", "nadam", "adamax")


def _adam_lr(compiled: dict) -> float | None:
    """The learning rate the file's Adam-like optimizer was compiled with (a schedule: its initial rate), else None
    (fine-tuning then starts from Adam's default)."""
    optimizer = compiled.get("optimizer") or compiled.get("optimizer_config")
    if not isinstance(optimizer, dict) or str(optimizer.get("class_name", "")).lower() not in ADAM_LIKE:
        return None
    lr = (optimizer.get("config") or {}).get("learning_rate")
    if isinstance(lr, dict):  # a serialized schedule
        lr = (lr.get("config") or {}).get("initial_learning_rate")
    try:
        lr = float(f"{float(lr):.6g}")  # float32 in the file: 0.0010000000474974513 was 1e-3
    except (TypeError, ValueError):
        return None
    return lr if 0 < lr < 1 else None


def _no_build(*_):
    raise UserError("a user model is not built or trained by the toolkit; it comes from its file")


def _loss_of(model, compiled: dict):
    loss = getattr(model, "loss", None)
    if loss is None:
        loss = compiled.get("loss")
        loss = loss if isinstance(loss, str) else None
    return loss


def _class_names(src: Source):
    path = Path(src.data) if src.data else None
    if path is not None and path.is_dir():
        return sorted(p.name for p in path.iterdir() if p.is_dir())
    return None


def _with_metric(spec: ModelSpec, metric_arg: str | None, model, compiled: dict, splits: Splits,
                 own_data: bool = False):
    """The spec with the metric to judge on: ``--metric``, else the spec's own, else inferred; and how it was chosen."""
    if metric_arg:
        metric = metrics.by_name(metric_arg)
        if metric is None:
            raise UserError(f"unknown metric {metric_arg!r}; valid: {', '.join(metrics.BY_NAME)}")
        return spec.replace(metric=metric, score_fn=None), f"{metric.name} (--metric)"
    if own_data:
        return spec, ""
    if splits.test.y is None:
        return spec.replace(metric=None), "unknown: no labels (pass --data with labels, e.g. an .npz with x and y, to measure accuracy)"
    if spec.metric is not None:
        return spec, ""
    out = model.outputs[0]
    width = out.shape[-1] if len(out.shape) > 1 else 1
    activation = getattr(getattr(model.layers[-1], "activation", None), "__name__", None)
    metric, how = metrics.infer(compiled, width, activation)
    return spec.replace(metric=metric), f"{metric.name} ({how}; --metric NAME to choose another)"


def _user_splits(src: Source, model) -> tuple[Splits, str]:
    signature = signature_of(model)
    out = model.outputs[0]
    width = int(out.shape[-1]) if len(out.shape) > 1 and out.shape[-1] else None
    data = user_data.read(src.data, signature, src.label)
    user_data.check(data, signature, width, f"--data {src.data}", tuple(out.shape[1:]))
    data = user_data.cast(data, signature)
    if src.eval_data:
        evaluation = user_data.read(src.eval_data, signature, src.label)
        user_data.check(evaluation, signature, width, f"--eval-data {src.eval_data}", tuple(out.shape[1:]))
        evaluation = user_data.cast(evaluation, signature)
        train, how = data, f"{src.data} ({len(data)} samples) for calibration and fine-tuning; {src.eval_data} " \
                           f"({len(evaluation)} samples) for the metric"
    else:
        train, evaluation = user_data.holdout(data, src.seed)
        how = (f"{src.data}: {len(train)} samples for calibration and fine-tuning, a seeded hold-out of "
               f"{len(evaluation)} ({user_data.HOLDOUT:.0%}, seed {src.seed}) for the metric, never calibrated or "
               "trained on (--eval-data to give one)")
    empty = Split(train.head(0).x, None if train.y is None else train.head(0).y)
    return Splits(train, empty, evaluation), how


def _synthetic_splits(model, seed: int, layered=None) -> tuple[Splits, str]:
    """Synthetic inputs for ``model``'s signature, in the ranges the first layers of ``layered`` (default: the
    model) declare."""
    signature = signature_of(model)
    layered = model if layered is None else layered
    train = Split(synthetic_inputs(layered, signature, SYNTHETIC_CALIBRATION, seed), None)
    test = Split(synthetic_inputs(layered, signature, SYNTHETIC_EVAL, seed + 1), None)
    ranges = "; ".join(f"{s.name}: {describe_range(layered, s)}" for s in signature)
    return Splits(train, train.head(0), test), (
        f"no --data: calibration and checks use synthetic inputs ({ranges}); the accuracy is unknown, "
        "--data FILE fixes it")
