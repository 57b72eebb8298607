"""Datasets that scikit-learn ships on disk (no download)."""
from __future__ import annotations

import numpy as np

from models.datasets import split_arrays
from models.spec import Splits


def iris(seed: int = 0) -> Splits:
    """Iris, standardised with the training split's mean and std."""
    from sklearn.datasets import load_iris  # deferred: scikit-learn

    data = load_iris()
    splits = split_arrays(data.data.astype("float32"), data.target.astype("int64"), seed)
    mean, std = splits.train.x.mean(0), splits.train.x.std(0) + 1e-6
    for s in (splits.train, splits.val, splits.test):
        s.x = ((s.x - mean) / std).astype("float32")
    return splits


def digits_28(seed: int = 0, size: int = 28) -> Splits:
    """scikit-learn's 8x8 digits, bilinearly resized to size x size x 1 in [0, 1] (an offline MNIST stand-in)."""
    from scipy.ndimage import zoom  # deferred: SciPy
    from sklearn.datasets import load_digits  # deferred: scikit-learn

    data = load_digits()
    images = data.images.astype("float32") / 16.0
    factor = size / images.shape[1]
    resized = np.stack([zoom(img, factor, order=1) for img in images]).clip(0, 1)
    return split_arrays(resized[..., None].astype("float32"), data.target.astype("int64"), seed)
