"""Keras/TF: a compiled tf.function call (what a TF server would run)."""
from __future__ import annotations

import time

from .loaded import Loaded


def unavailable() -> str | None:
    return None  # TensorFlow is a hard dependency


def load(path, threads: int | None = None) -> Loaded:
    from models.backend import tf
    from models.loading import load_keras

    t0 = time.perf_counter()
    model = load_keras(path)
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(x):
        out = call(x)
        return [o.numpy() for o in out] if isinstance(out, (list, tuple)) else out.numpy()

    return Loaded(predict, (time.perf_counter() - t0) * 1e3, provider="tf-cpu")
