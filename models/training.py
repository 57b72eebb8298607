"""Train a zoo model once and reuse it: a cache keyed by name + version + config + seed."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.artifacts import atomic_path, cache_dir, key_of, write_json
from models.backend import keras, tf
from models.loading import load_keras
from models.spec import ModelSpec, Predict, Splits, n_samples

_SPLITS: dict[tuple, Splits] = {}


def get_splits(spec: ModelSpec, config: dict, seed: int = 0) -> Splits:
    """The spec's data for this config and seed (memoised: generators can be slow)."""
    key = (spec.name, spec.version, key_of(config), seed)
    if key not in _SPLITS:
        _SPLITS[key] = spec.load_data(config, seed)
    return _SPLITS[key]


def forget_splits() -> None:
    """Drop the memoised datasets (a sweep over the zoo would otherwise hold all of them at once)."""
    _SPLITS.clear()


def keras_predict(model, batch_size: int = 256) -> Predict:
    """A Predict over a Keras model: numpy in, numpy (or list of numpy for multi-output) out."""

    def predict(x):
        if n_samples(x) <= batch_size:  # model.predict costs ~100 ms of set-up per call; agents call this per step
            out = model.predict_on_batch(x)
            return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)
        return model.predict(x, batch_size=batch_size, verbose=0)

    return predict


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow and make TensorFlow's ops deterministic: the same inputs and seed give the
    same weights (fine-tuning's shuffles and dropout, clustering's initial centroids), so the same file."""
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def compile_for_training(spec: ModelSpec, model, config: dict, lr: float | None = None):
    model.compile(optimizer=keras.optimizers.Adam(lr or config.get("lr", 1e-3)), loss=spec.loss)
    return model


def fit(spec: ModelSpec, model, splits: Splits, config: dict, seed: int = 0, epochs: int | None = None,
        callbacks=(), lr: float | None = None):
    """Default supervised training: Adam + the spec's loss on the train split, val split monitored."""
    compile_for_training(spec, model, config, lr)
    val = (splits.val.x, splits.val.y) if len(splits.val) else None
    model.fit(splits.train.x, splits.train.y, validation_data=val,
              epochs=config.get("epochs", 10) if epochs is None else epochs,
              batch_size=config.get("batch_size", 32), verbose=0, shuffle=True, callbacks=list(callbacks))
    return model


@dataclass
class TrainedModel:
    spec: ModelSpec
    config: dict
    seed: int
    path: Path
    metric: float
    meets_bar: bool
    train_seconds: float
    from_cache: bool

    def load(self):
        return load_keras(self.path)

    def splits(self) -> Splits:
        return get_splits(self.spec, self.config, self.seed)


def evaluate(spec: ModelSpec, model, splits: Splits, config: dict) -> float:
    return spec.score(keras_predict(model), splits.test, config)


def train(spec: ModelSpec, tiny: bool = False, seed: int = 0, cache: str | Path | None = None,
          force: bool = False, **overrides) -> TrainedModel:
    """Train ``spec`` (or reuse the cached result) and save ``<name>-<key>.keras`` with a JSON sidecar."""
    config = spec.resolve_config(tiny, **overrides)
    key = key_of({"name": spec.name, "version": spec.version, "config": config, "seed": seed,
                  "keras": keras.__version__})
    out_dir = cache_dir(cache) / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.name}-{key}.keras"
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists() and not force:
        meta = json.loads(sidecar.read_text())
        return TrainedModel(spec, config, seed, path, meta["metric"], meta["meets_bar"],
                            meta["train_seconds"], from_cache=True)

    keras.utils.set_random_seed(seed)
    splits = get_splits(spec, config, seed)
    model = spec.build(config)
    start = time.perf_counter()
    if spec.train_fn is not None:
        model = spec.train_fn(model, splits, config, seed) or model
    elif spec.trainable:
        fit(spec, model, splits, config, seed)
    seconds = time.perf_counter() - start
    value = evaluate(spec, model, splits, config)
    meets = spec.metric.meets(value, spec.quality_bar)
    if model.optimizer is not None:  # a fresh, unbuilt optimizer: its state is dead weight for deployment
        model.compile(optimizer="adam", loss=spec.loss)
    with atomic_path(path) as tmp:
        model.save(tmp)
    write_json(sidecar, {
        "model": spec.name, "config": config, "seed": seed, "metric_name": spec.metric.name,
        "metric": value, "quality_bar": spec.quality_bar, "meets_bar": meets,
        "higher_is_better": spec.metric.higher_is_better, "train_seconds": round(seconds, 2),
        "tiny": tiny,
    })
    return TrainedModel(spec, config, seed, path, value, meets, seconds, from_cache=False)
