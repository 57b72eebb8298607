"""The one place that picks the Keras implementation.

tfmot only supports Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is first imported. Every module of the toolkit gets ``tf`` and
``keras`` from here, never by importing tensorflow directly.
"""
import contextlib
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr():
    """Silence native start-up chatter (absl/oneDNN/CUDA stubs) written straight to fd 2."""
    if os.environ.get("CT_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with quiet_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras", "quiet_stderr"]
