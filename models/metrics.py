"""Task metrics shared by the zoo (each a Metric: name, function, direction)."""
from __future__ import annotations

import numpy as np

from models.spec import Metric


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
    from sklearn.metrics import roc_auc_score  # deferred: scikit-learn

    return float(roc_auc_score(np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()))


def _pr_auc(y_true, y_pred) -> float:
    from sklearn.metrics import average_precision_score  # deferred: scikit-learn

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


def _top5(y_true, y_pred) -> float:
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_true.ndim >= 2 and y_true.shape[-1] > 1:
        y_true = y_true.argmax(-1)
    top = np.argsort(-y_pred.reshape(len(y_pred), -1), axis=-1)[:, :5]
    return float(np.mean([t in row for t, row in zip(y_true.reshape(-1), top)]))


def _mae(y_true, y_pred) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float).reshape(np.shape(y_true)))))


TOP5 = Metric("top5_accuracy", _top5, higher_is_better=True)
MAE = Metric("mae", _mae, higher_is_better=False)

#: ``--metric NAME``: every name a user may give, with aliases Keras users write in compile(metrics=[...])
BY_NAME = {m.name: m for m in (ACCURACY, TOP5, ROC_AUC, PR_AUC, MSE, MAE, RMSE)}
ALIASES = {"acc": "accuracy", "sparse_categorical_accuracy": "accuracy", "categorical_accuracy": "accuracy",
           "binary_accuracy": "accuracy", "auc": "roc_auc", "top_k_categorical_accuracy": "top5_accuracy",
           "sparse_top_k_categorical_accuracy": "top5_accuracy", "top5": "top5_accuracy",
           "mean_squared_error": "mse", "mean_absolute_error": "mae", "root_mean_squared_error": "rmse",
           "rootmeansquarederror": "rmse", "meansquarederror": "mse", "meanabsoluteerror": "mae",
           "sparsecategoricalaccuracy": "accuracy", "categoricalaccuracy": "accuracy", "binaryaccuracy": "accuracy"}


def by_name(name: str) -> Metric | None:
    key = str(name).strip().lower()
    return BY_NAME.get(ALIASES.get(key, key))


def _names(obj) -> list[str]:
    """Metric/loss names in a saved compile config (strings, serialized objects, nested lists or dicts)."""
    if obj is None:
        return []
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        if "class_name" in obj:
            inner = obj.get("config")
            return [inner.get("name") or obj["class_name"]] if isinstance(inner, dict) else [obj["class_name"]]
        return [n for v in obj.values() for n in _names(v)]
    if isinstance(obj, (list, tuple)):
        return [n for v in obj for n in _names(v)]
    return []


_LOSS_METRIC = [("crossentropy", "accuracy"), ("hinge", "accuracy"), ("mean_absolute", "mae"), ("mae", "mae"),
                ("huber", "mae"), ("mean_squared", "mse"), ("mse", "mse")]


def infer(compile_config: dict | None, output_width: int | None, output_activation: str | None) -> tuple[Metric, str]:
    """The metric a user model is judged on when ``--metric`` is not given, and how it was chosen."""
    compile_config = compile_config or {}
    for name in _names(compile_config.get("metrics")) + _names(compile_config.get("weighted_metrics")):
        metric = by_name(name)
        if metric is not None:
            return metric, f"from the model's compile(metrics=[{name!r}])"
    for name in _names(compile_config.get("loss")):
        key = name.lower()
        for needle, metric_name in _LOSS_METRIC:
            if needle in key:
                return BY_NAME[metric_name], f"from the model's loss {name!r}"
    if output_width and output_width > 1 or output_activation in ("softmax", "sigmoid"):
        return ACCURACY, f"from the model's output ({output_width} unit(s), {output_activation or 'linear'})"
    return MSE, "from the model's output (one linear unit: a regression)"
