"""gnn: the seed's two-layer graph convolutional network (001 §3.3, also named in 000 §9).

Architecture: GraphConv(16, relu) -> Dropout -> GraphConv(16, relu) -> Dense(2, softmax), where
GraphConv computes ``A_hat @ (X @ W) + b`` (Kipf & Welling). Inputs (one graph per batch item):
"node_features" (N, F) and "adjacency" (N, N), the normalised D^-1/2 (A + I) D^-1/2. Output: per-node
club probabilities (N, 2).

Task: Zachary's karate club (``networkx.karate_club_graph()``, 34 nodes, label = the 'club' node
attribute: Mr. Hi / Officer). Node features are the identity matrix (one-hot node id: the classic
featureless GCN set-up), so only the graph structure informs the prediction. Train/val/test are a
stratified 50/20/30 node split fixed by the seed: ``x`` is the same whole graph in every split and
``y`` (1, N) holds the labels of that split's nodes and -1 elsewhere; training weights the loss by
the train mask, and the metric is accuracy over the split's labelled nodes only.

Seed changes: the seed's GraphConv takes the adjacency as a second positional call argument (not
serializable in a functional model) and has no get_config, so it could not be saved/loaded; its
Input shapes ``(features,)`` / ``(num_nodes,)`` treat nodes as independent samples, so
``matmul(adjacency, x)`` does not even aggregate over neighbours; it applies ``tf.nn.relu`` to
symbolic tensors (a TF-op layer) and trains on random features, a random graph and random labels.
Here GraphConv takes ``[features, adjacency]``, has bias and activation, is registered serializable
(package "ct") and the inputs carry the node axis. Hidden sizes 32/16 -> 16/16 and a Dropout(0.5)
(standard GCN regularisation: 17 labelled nodes, 34-wide identity features); sigmoid(1) -> softmax(2).
"""
from __future__ import annotations

import numpy as np

from models.backend import keras, tf
from models.datasets.graph import KARATE_CLUBS, karate_club
from models.registry import register
from models.spec import Metric, ModelSpec


@keras.saving.register_keras_serializable(package="ct")
class GraphConv(keras.layers.Layer):
    """Graph convolution: ``activation(A_hat @ (X @ W) + b)``; call on ``[X (b, N, F), A_hat (b, N, N)]``."""

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        feature_shape = input_shape[0]
        self.kernel = self.add_weight(name="kernel", shape=(int(feature_shape[-1]), self.units),
                                      initializer=self.kernel_initializer, trainable=True)
        self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer="zeros", trainable=True)
                     if self.use_bias else None)
        super().build(input_shape)

    def call(self, inputs):
        features, adjacency = inputs
        out = tf.matmul(adjacency, tf.matmul(features, self.kernel))
        if self.bias is not None:
            out = out + self.bias
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=keras.activations.serialize(self.activation),
                      use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


def build(config: dict):
    n, f = config["nodes"], config["features"]
    feats = keras.Input((n, f), name="node_features")
    adj = keras.Input((n, n), name="adjacency")
    h = GraphConv(config["hidden"][0], activation="relu", name="gc1")([feats, adj])
    h = keras.layers.Dropout(config["dropout"])(h)
    h = GraphConv(config["hidden"][1], activation="relu", name="gc2")([h, adj])
    out = keras.layers.Dense(config["classes"], activation="softmax", name="node_class")(h)
    return keras.Model([feats, adj], out, name="gnn")


def load_data(config: dict, seed: int):
    return karate_club(seed, val=0.2, test=0.3)


def masked_accuracy(y_true, y_pred) -> float:
    """Accuracy over the labelled nodes (label >= 0) only."""
    y_true = np.asarray(y_true)
    pred = np.asarray(y_pred).reshape(y_true.shape + (-1,)).argmax(-1)
    mask = y_true >= 0
    return float(np.mean(pred[mask] == y_true[mask]))


NODE_ACCURACY = Metric("node_accuracy", masked_accuracy)


def train_fn(model, splits, config, seed):
    """Full-graph training: one step per epoch, loss weighted by the train-node mask."""
    y = splits.train.y
    weights = (y >= 0).astype("float32")
    model.compile(keras.optimizers.Adam(config["lr"]), loss="sparse_categorical_crossentropy",
                  weighted_metrics=[])
    model.fit(splits.train.x, np.maximum(y, 0), sample_weight=weights, epochs=config["epochs"],
              batch_size=1, verbose=0, shuffle=False)
    return model


register(ModelSpec(
    name="gnn",
    seed_doc="001 §3.3 (GNN), 000 §9",
    task="karate club node classification (2 clubs, held-out nodes)",
    build=build,
    load_data=load_data,
    metric=NODE_ACCURACY,
    quality_bar=0.85,
    config={"nodes": 34, "features": 34, "hidden": (16, 16), "dropout": 0.5, "classes": 2, "epochs": 200,
            "lr": 1e-2},
    tiny={"hidden": (4, 4), "epochs": 5},
    train_fn=train_fn,
    labels=KARATE_CLUBS,
    preprocessing="node_features = identity (one-hot node id); adjacency = D^-1/2 (A + I) D^-1/2 (unweighted)",
    notes=__doc__,
))
