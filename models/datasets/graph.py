"""Graph data shipped with networkx (no download): Zachary's karate club as one-graph node classification."""
from __future__ import annotations

import numpy as np

from models.spec import Split, Splits

KARATE_CLUBS = ("Mr. Hi", "Officer")


def normalized_adjacency(adj: np.ndarray) -> np.ndarray:
    """GCN propagation matrix D^-1/2 (A + I) D^-1/2."""
    a = np.asarray(adj, "float64") + np.eye(len(adj))
    d = 1.0 / np.sqrt(a.sum(1))
    return (a * d[:, None] * d[None, :]).astype("float32")


def node_splits(labels: np.ndarray, seed: int, val: float, test: float) -> tuple[np.ndarray, ...]:
    """Stratified train/val/test node indices (fixed by ``seed``)."""
    from sklearn.model_selection import train_test_split  # deferred: scikit-learn

    idx = np.arange(len(labels))
    i_train, i_rest = train_test_split(idx, test_size=val + test, random_state=seed, stratify=labels)
    i_val, i_test = train_test_split(i_rest, test_size=test / (val + test), random_state=seed,
                                     stratify=labels[i_rest])
    return i_train, i_val, i_test


def masked_labels(labels: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """(1, N) labels with -1 for every node outside ``nodes``."""
    y = np.full(len(labels), -1, "int64")
    y[nodes] = labels[nodes]
    return y[None]


def karate_club(seed: int = 0, val: float = 0.2, test: float = 0.3) -> Splits:
    """The karate club graph as a batch of one graph.

    x = {"node_features": (1, N, N) identity (one-hot node id), "adjacency": (1, N, N) normalised
    adjacency}, the same in every split; y = (1, N) club labels (0 = Mr. Hi, 1 = Officer) with -1 for
    the nodes that are not in that split (stratified node split, fixed by ``seed``).
    """
    import networkx as nx  # deferred: networkx

    g = nx.karate_club_graph()
    nodes = sorted(g.nodes())
    labels = np.array([KARATE_CLUBS.index(g.nodes[v]["club"]) for v in nodes], "int64")
    adj = nx.to_numpy_array(g, nodelist=nodes, weight=None)
    x = {"node_features": np.eye(len(nodes), dtype="float32")[None],
         "adjacency": normalized_adjacency(adj)[None]}
    parts = node_splits(labels, seed, val, test)
    return Splits(*(Split({k: v.copy() for k, v in x.items()}, masked_labels(labels, p)) for p in parts))


__all__ = ["KARATE_CLUBS", "normalized_adjacency", "node_splits", "masked_labels", "karate_club"]
