"""Real datasets that need the internet. Never a default: only reached by explicit name."""
from __future__ import annotations

import numpy as np

from models.datasets import split_arrays
from models.errors import UserError
from models.spec import Splits


def mnist(seed: int = 0, limit: int | None = None) -> Splits:
    """keras.datasets.mnist (downloads on first use; fails cleanly offline)."""
    from models.backend import keras  # deferred: models.backend loads TensorFlow

    try:
        (x_tr, y_tr), (x_te, y_te) = keras.datasets.mnist.load_data()
    except Exception as e:  # no network here: say so in one line
        raise UserError(f"cannot load MNIST (it downloads on first use): {e}") from None
    x = np.concatenate([x_tr, x_te])[..., None].astype("float32") / 255.0
    y = np.concatenate([y_tr, y_te]).astype("int64")
    if limit:
        x, y = x[:limit], y[:limit]
    return split_arrays(x, y, seed)
