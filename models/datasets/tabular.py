"""Procedural tabular datasets (scikit-learn generators, no downloads)."""
from __future__ import annotations

from models.datasets import split_arrays
from models.spec import Splits


def imbalanced_transactions(n: int = 50000, seed: int = 0, n_features: int = 30, positive_rate: float = 0.015,
                            data_seed: int = 0) -> Splits:
    """A credit-card-fraud stand-in: ``make_classification`` with ~1.5% positives and 30 features.

    8 informative + 6 redundant features, 2 Gaussian clusters per class, class_sep 1.0 and 0.2% label noise, so
    a linear model is clearly beaten by a non-linear one (but neither is perfect). ``data_seed`` fixes the
    generated table; ``seed`` the stratified 60/20/20 split. Features are standardised with the training
    split's mean and std (the seed's StandardScaler, fitted on train only).
    """
    from sklearn.datasets import make_classification  # deferred: scikit-learn

    x, y = make_classification(n_samples=n, n_features=n_features, n_informative=8, n_redundant=6,
                               n_clusters_per_class=2, class_sep=1.0, flip_y=0.002,
                               weights=[1.0 - positive_rate], random_state=data_seed)
    splits = split_arrays(x.astype("float32"), y.astype("int64"), seed)
    mean, std = splits.train.x.mean(0), splits.train.x.std(0) + 1e-6
    for s in (splits.train, splits.val, splits.test):
        s.x = ((s.x - mean) / std).astype("float32")
    return splits


def logistic_baseline(splits: Splits) -> float:
    """PR-AUC (average precision) on the test split of an L2 logistic regression fitted on the train split.

    Deterministic: lbfgs, C=1, max_iter=2000, no class weights, on the (already standardised) features.
    """
    from sklearn.linear_model import LogisticRegression  # deferred: scikit-learn
    from sklearn.metrics import average_precision_score  # deferred: scikit-learn

    clf = LogisticRegression(C=1.0, max_iter=2000).fit(splits.train.x, splits.train.y)
    return float(average_precision_score(splits.test.y, clf.predict_proba(splits.test.x)[:, 1]))


__all__ = ["imbalanced_transactions", "logistic_baseline"]
