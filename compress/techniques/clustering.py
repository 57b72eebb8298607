"""Weight clustering (weight sharing) with tfmot, per layer: k centroids per kernel, fine-tuned, stripped.

After stripping, every clustered kernel holds at most k distinct values, which is what gzip (and
TFLite's palettisation-aware formats) turn into bytes saved.
"""
from __future__ import annotations

import numpy as np

from models.backend import quiet_stderr

from compress.techniques import custom
from compress.techniques.finetune import as_finetune
from compress.techniques.selective import kernel_weights, kernels_by_layer, rebuild, start_outcome, wrap_layers

with quiet_stderr():
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.clustering.keras.clusterable_layer import ClusterableLayer
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import ClusteringRegistry

CentroidInit = tfmot.clustering.keras.CentroidInitialization
INITS = {"linear": CentroidInit.LINEAR, "kmeans++": CentroidInit.KMEANS_PLUS_PLUS,
         "density": CentroidInit.DENSITY_BASED, "random": CentroidInit.RANDOM}


def cluster_support(layer, clusters: int) -> str | None:
    """None if tfmot can cluster this layer's kernels into ``clusters`` values, else the reason."""
    reason = custom.no_weights_reason(layer)
    if reason:
        return reason
    name = type(layer).__name__
    if not isinstance(layer, ClusterableLayer) and not ClusteringRegistry.supports(layer):
        if custom.is_custom(layer):
            return (f"custom layer {name} has no clustering config (make it a ClusterableLayer or register it with "
                    "compress.techniques.custom.register)")
        return f"tfmot has no clustering support for {name}"
    if not isinstance(layer, ClusterableLayer):
        names = None
        if layer.__class__ in ClusteringRegistry._LAYERS_WEIGHTS_MAP:
            names = ClusteringRegistry._LAYERS_WEIGHTS_MAP[layer.__class__]
        if names == []:
            if name == "DepthwiseConv2D":
                return "tfmot leaves DepthwiseConv2D unclustered (large unrecoverable accuracy loss)"
            return f"{name} has no clusterable weights (only scales/offsets)"
    kernels = kernel_weights(layer)
    small = [w for w in kernels if int(np.prod(w.shape)) <= clusters]
    if small:
        return (f"kernel {small[0].name.split(':')[0]} has {int(np.prod(small[0].shape))} weights, not more than "
                f"{clusters} clusters")
    return None


def distinct_values(model, layers: list[str] | None = None) -> dict[str, int]:
    """Distinct kernel values per layer (max over the layer's kernels): <= k after clustering."""
    return {name: max(len(np.unique(w.numpy())) for w in kernels)
            for name, kernels in kernels_by_layer(model, layers)}


def cluster(model, train=None, loss=None, *, clusters: int = 16, init: str = "kmeans++", epochs: int = 1,
            batch_size: int = 32, lr: float = 1e-4, preserve_sparsity: bool = False):
    """Cluster every supported layer's kernels into ``clusters`` centroids; returns (stripped model, Outcome).

    ``train``: a Split (+ ``loss``), a FineTune, or None (one-shot: centroids from the trained weights, no
    fine-tuning). ``preserve_sparsity`` keeps the zeros of a pruned model (sparsity-preserving clustering).
    """
    if clusters < 2:
        raise ValueError(f"clusters must be >= 2, got {clusters}")
    if init not in INITS:
        raise ValueError(f"unknown centroid init {init!r}; valid: {', '.join(INITS)}")
    tune = as_finetune(train, loss, epochs=epochs, batch_size=batch_size, lr=lr)
    outcome = start_outcome(model, "cluster")
    if outcome.blocked:
        return model, outcome

    def wrap(layer):
        return tfmot.clustering.keras.cluster_weights(layer, number_of_clusters=clusters,
                                                      cluster_centroids_init=INITS[init],
                                                      preserve_sparsity=preserve_sparsity)

    with quiet_stderr():
        wrapped = wrap_layers(model, outcome, lambda layer: cluster_support(layer, clusters), wrap)
    if outcome.ran and tune.enabled:
        tune.fit(wrapped)
    stripped = rebuild(tfmot.clustering.keras.strip_clustering(wrapped))
    counts = distinct_values(stripped, outcome.applied)
    outcome.details = {"clusters": clusters, "init": init, "fine_tuning": tune.describe(),
                       "preserve_sparsity": preserve_sparsity,
                       "max_distinct_values": max(counts.values()) if counts else None}
    return stripped, outcome
