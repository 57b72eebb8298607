"""Keras/TF: a compiled tf.function call (what a TF server runs), and model.predict as the naive baseline."""
from __future__ import annotations

import time

from models.loading import load_keras

from benchmarks.runtimes.loaded import Loaded


def unavailable() -> str | None:
    return None  # TensorFlow is a hard dependency


def gpu_unavailable() -> str | None:
    from models.backend import tf  # deferred: models.backend loads TensorFlow

    if not tf.config.list_physical_devices("GPU"):
        built = tf.test.is_built_with_cuda()
        return ("TensorFlow sees no GPU" + ("" if built else " (this TensorFlow build has no CUDA; on an NVIDIA "
                                                             "machine `make gpu` installs tensorflow[and-cuda])"))
    return None


def _outputs_numpy(out):
    return [o.numpy() for o in out] if isinstance(out, (list, tuple)) else out.numpy()


def _load(path, threads, device):
    from models.backend import tf  # deferred: models.backend loads TensorFlow

    if threads:
        try:  # only possible before TensorFlow starts its thread pools (benchmarks run each case in a fresh process)
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass
    t0 = time.perf_counter()
    with tf.device(device):
        model = load_keras(path)
        call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(x):
        with tf.device(device):
            return _outputs_numpy(call(x))

    def bind(x):
        with tf.device(device):
            xt = tf.nest.map_structure(tf.constant, x)
        return lambda: _outputs_numpy(call(xt))

    return model, predict, bind, (time.perf_counter() - t0) * 1e3


def load(path, threads: int | None = None) -> Loaded:
    _, predict, bind, init_ms = _load(path, threads, "/CPU:0")
    return Loaded(predict, bind, init_ms, provider="tf-cpu")


def load_gpu(path, threads: int | None = None) -> Loaded:
    _, predict, bind, init_ms = _load(path, threads, "/GPU:0")
    return Loaded(predict, bind, init_ms, provider="tf-gpu")


def load_predict(path, threads: int | None = None) -> Loaded:
    model, _, _, init_ms = _load(path, threads, "/CPU:0")

    def predict(x):
        return model.predict(x, verbose=0, batch_size=256)

    return Loaded(predict, lambda x: (lambda: model.predict(x, verbose=0)), init_ms, provider="tf-cpu (model.predict)")
