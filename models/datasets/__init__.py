"""Offline datasets. Defaults use only data shipped by installed packages or generated here;
loaders that download (e.g. MNIST) are reachable only by their explicit names."""
from __future__ import annotations

import numpy as np

from models.spec import Split, Splits


def split_arrays(x, y, seed: int, val: float = 0.2, test: float = 0.2, stratify: bool = True) -> Splits:
    """Shuffle and split into train/val/test (stratified on ``y`` for classification)."""
    from sklearn.model_selection import train_test_split  # deferred: scikit-learn

    idx = np.arange(len(y))
    strat = y if stratify else None
    i_train, i_rest = train_test_split(idx, test_size=val + test, random_state=seed, stratify=strat)
    strat_rest = y[i_rest] if stratify else None
    i_val, i_test = train_test_split(i_rest, test_size=test / (val + test), random_state=seed, stratify=strat_rest)

    def pick(ix):
        xs = {k: v[ix] for k, v in x.items()} if isinstance(x, dict) else x[ix]
        return Split(xs, y[ix])

    return Splits(pick(i_train), pick(i_val), pick(i_test))
