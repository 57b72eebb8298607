"""The dataclasses every package talks in: a model's spec, its data and its metric."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

Inputs = Union[np.ndarray, Mapping[str, np.ndarray]]
#: A predict function: inputs (array, or dict of named arrays) -> output array (or list for multi-output).
Predict = Callable[[Inputs], Any]


def n_samples(x: Inputs) -> int:
    if isinstance(x, Mapping):
        return len(next(iter(x.values())))
    return len(x)


def take(x: Any, index) -> Any:
    """Index the sample axis of an array, a dict of arrays or a list of arrays."""
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: v[index] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(v[index] for v in x)
    return x[index]


@dataclass
class Split:
    x: Inputs
    y: Any = None

    def __len__(self) -> int:
        return n_samples(self.x)

    def head(self, n: int) -> "Split":
        return Split(take(self.x, slice(0, n)), take(self.y, slice(0, n)))


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[Any, Any], float]
    higher_is_better: bool = True

    def meets(self, value: float, bar: float) -> bool:
        return value >= bar if self.higher_is_better else value <= bar

    def __call__(self, y_true, y_pred) -> float:
        return float(self.fn(y_true, y_pred))


@dataclass(frozen=True)
class TensorSig:
    name: str
    shape: tuple  # without the batch axis
    dtype: str = "float32"


def _default_score(spec: "ModelSpec", predict: Predict, split: Split, config: dict) -> float:
    return spec.metric(split.y, predict(split.x))


@dataclass(frozen=True)
class ModelSpec:
    """Everything the toolkit needs to know about a zoo model.

    ``build(config)`` returns an untrained Keras model; ``load_data(config, seed)``
    returns offline train/val/test splits. ``config`` holds the full-size settings,
    ``tiny`` the overrides that make a test run in seconds.
    """

    name: str
    seed_doc: str
    task: str
    build: Callable[[dict], Any]
    load_data: Callable[[dict, int], Splits]
    metric: Metric
    quality_bar: float
    config: Mapping[str, Any]
    tiny: Mapping[str, Any]
    loss: Any = "sparse_categorical_crossentropy"
    #: custom training loop ``(model, splits, config, seed) -> model`` for models that are not trained by fit()
    train_fn: Callable | None = None
    #: custom evaluation ``(predict, split, config) -> float``; default: metric(split.y, predict(split.x))
    score_fn: Callable | None = None
    #: calibration sample for int8 quantization ``(splits, n) -> inputs``; default: first n training inputs
    calibration_fn: Callable | None = None
    export_atol: float = 1e-4
    labels: Sequence[str] | None = None
    preprocessing: str = ""
    notes: str = ""
    #: bump when the model or data code changes, so cached trained models are rebuilt
    version: int = 1
    trainable: bool = True

    def resolve_config(self, tiny: bool = False, **overrides) -> dict:
        cfg = dict(self.config)
        if tiny:
            cfg.update(self.tiny)
        cfg.update(overrides)
        return cfg

    def score(self, predict: Predict, split: Split, config: dict) -> float:
        if self.score_fn is not None:
            return float(self.score_fn(predict, split, config))
        return _default_score(self, predict, split, config)

    def calibration(self, splits: Splits, n: int = 100) -> Inputs:
        if self.calibration_fn is not None:
            return self.calibration_fn(splits, n)
        return splits.train.head(n).x

    def input_signature(self, config: dict | None = None) -> tuple[TensorSig, ...]:
        model = self.build(dict(config or self.config))
        return signature_of(model)

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


def signature_of(model) -> tuple[TensorSig, ...]:
    """Input names, shapes (no batch axis) and dtypes of a built Keras model."""
    sigs = []
    for t in model.inputs:
        name = t.name.split(":")[0]
        sigs.append(TensorSig(name, tuple(t.shape[1:]), t.dtype.name))
    return tuple(sigs)


__all__ = [
    "Inputs", "Predict", "Split", "Splits", "Metric", "TensorSig", "ModelSpec",
    "signature_of", "n_samples", "take", "field",
]
