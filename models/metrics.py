"""Task metrics shared by the zoo (each a Metric: name, function, direction)."""
from __future__ import annotations

import numpy as np

from .spec import Metric


def _labels(y_pred) -> np.ndarray:
    y_pred = np.asarray(y_pred)
    if y_pred.ndim >= 2 and y_pred.shape[-1] > 1:
        return y_pred.argmax(-1)
    return (y_pred.reshape(len(y_pred), -1)[:, 0] > 0.5).astype(int)


def _accuracy(y_true, y_pred) -> float:
    y_true = np.asarray(y_true)
    if y_true.ndim >= 2 and y_true.shape[-1] > 1:  # one-hot
        y_true = y_true.argmax(-1)
    return float(np.mean(_labels(y_pred) == y_true.reshape(_labels(y_pred).shape)))


def _rmse(y_true, y_pred) -> float:
    return float(np.sqrt(np.mean((np.asarray(y_true, float) - np.asarray(y_pred, float).reshape(np.shape(y_true))) ** 2)))


def _mse(y_true, y_pred) -> float:
    return float(np.mean((np.asarray(y_true, float) - np.asarray(y_pred, float).reshape(np.shape(y_true))) ** 2))


def _roc_auc(y_true, y_pred) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()))


def _pr_auc(y_true, y_pred) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()))


def agreement(reference, y_pred) -> float:
    """Top-1 agreement of a variant's predictions with reference predictions (or labels)."""
    return _accuracy(reference, y_pred)


ACCURACY = Metric("accuracy", _accuracy, higher_is_better=True)
RMSE = Metric("rmse", _rmse, higher_is_better=False)
MSE = Metric("mse", _mse, higher_is_better=False)
ROC_AUC = Metric("roc_auc", _roc_auc, higher_is_better=True)
PR_AUC = Metric("pr_auc", _pr_auc, higher_is_better=True)
AGREEMENT = Metric("top1_agreement", agreement, higher_is_better=True)
