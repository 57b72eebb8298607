"""Which technique applies to which layer, and why not: decided from the model's structure, nothing is run."""
from __future__ import annotations

from dataclasses import dataclass, field

from models.backend import keras

from compress.techniques.channels import _graph, channel_support
from compress.techniques.clustering import cluster_support
from compress.techniques.pruning import prune_support
from compress.techniques.qat import _follows_annotated_conv, q8, qat_support
from compress.techniques.weight_algos.cle import verdicts as cle_verdicts
from compress.techniques.weight_algos.common import verdicts as kernel_verdicts

TECHNIQUES = ("prune", "2:4", "channel", "cluster", "qat", "cle", "adaround", "bias-correction")
#: the weight algorithms' columns (run before an int8 export: --weight-algos)
WEIGHT_ALGOS = ("cle", "adaround", "bias-correction")


@dataclass
class Row:
    layer: str
    kind: str
    #: technique -> None (applies) or the reason it does not
    verdicts: dict = field(default_factory=dict)


def preflight(model, clusters: int = 16) -> list[Row]:
    """One row per layer with weights (plus weightless layers QAT leaves in float)."""
    graph = _graph(model) if getattr(model, "_is_graph_network", False) else None
    registry = q8.Default8BitQuantizeRegistry()
    quantized: set = set()
    rows = []
    algos = {"cle": cle_verdicts(model), "adaround": kernel_verdicts(model),
             "bias-correction": kernel_verdicts(model, need_bias=True)}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        q_reason, _ = qat_support(layer, registry)
        if q_reason is not None and isinstance(layer, keras.layers.BatchNormalization) and \
                _follows_annotated_conv(layer, quantized):
            q_reason = None
        if q_reason is None:
            quantized.add(layer.name)
        if not layer.weights and q_reason is None:
            continue
        row = Row(layer.name, type(layer).__name__)
        if layer.weights:
            row.verdicts["prune"] = prune_support(layer)
            row.verdicts["2:4"] = prune_support(layer, (2, 4))
            row.verdicts["channel"] = (channel_support(layer, graph) if graph is not None else
                                       "a subclassed model: its graph cannot be rebuilt")
            row.verdicts["cluster"] = cluster_support(layer, clusters)
        else:
            for technique in ("prune", "2:4", "channel", "cluster"):
                row.verdicts[technique] = "no weights"
        row.verdicts["qat"] = q_reason
        for technique in WEIGHT_ALGOS:
            row.verdicts[technique] = algos[technique].get(layer.name, "no weights")
        rows.append(row)
    return rows


def summary(rows: list[Row]) -> dict[str, int]:
    """Layers each technique applies to."""
    return {t: sum(1 for r in rows if r.verdicts.get(t) is None) for t in TECHNIQUES}
