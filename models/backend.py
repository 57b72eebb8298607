"""The one place that picks the Keras implementation.

tfmot only supports Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is first imported. Every module of the toolkit gets ``tf`` and
``keras`` from here, never by importing tensorflow directly.
"""
import contextlib
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")

from ct_runtime.base import quiet_native_stderr  # noqa: E402  (TensorFlow-free, like the runtime it serves)


@contextlib.contextmanager
def quiet_stderr():
    """Silence native start-up chatter (absl/oneDNN/CUDA stubs) written straight to fd 2; CT_VERBOSE=1 keeps it."""
    if os.environ.get("CT_VERBOSE"):
        yield
        return
    with quiet_native_stderr():
        yield


with quiet_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras", "quiet_stderr"]
