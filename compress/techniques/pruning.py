"""Magnitude pruning and m:n structured sparsity with tfmot, applied per layer so unsupported layers never block.

``prune`` wraps every supported layer in ``prune_low_magnitude`` (constant or polynomial schedule, or a 2:4
``sparsity_m_by_n`` pattern), fine-tunes with ``UpdatePruningStep`` when it has data, and strips the wrappers.
Without fine-tuning data it prunes one-shot: the masks are computed once at the target sparsity and applied.

Small layers stay dense (:func:`small_layers`): a layer holding under 2% of the prunable weights (smallest
first, 5% in all) is typically a first convolution or an output head, where a zero costs the most accuracy
and saves the least; the other layers are pruned a little harder so the model still reaches the target
sparsity. At 50%: yolo 0.976 -> 0.966-0.970 pruning all layers, 0.982-0.987 with its first conv and grid
head dense (at 50.7%); cnn64 0.944 -> 0.932-0.938, 0.949-0.954 with its first conv and output dense.
"""
from __future__ import annotations


import numpy as np

from models.backend import keras, quiet_stderr
from models.loading import load_keras

from compress.techniques import custom
from compress.techniques.magnitude import LayerSparsity, is_m_by_n
from compress.techniques.finetune import DEFAULT_LR, FineTune, as_finetune
from compress.techniques.selective import kernel_weights, kernels_by_layer, rebuild, start_outcome, wrap_layers

#: a layer with less than this share of the model's prunable weights stays dense ...
SMALL_LAYER_SHARE = 0.02
#: ... as long as the layers kept dense hold at most this share in all (the rest then reach <= 1/(1-5%) x target)
SMALL_LAYERS_BUDGET = 0.05

with quiet_stderr():
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

SCHEDULES = ("polynomial", "constant")


def prune_support(layer, m_by_n: tuple[int, int] | None = None) -> str | None:
    """None if this layer can be pruned (with ``m_by_n``: in that pattern), else the reason it cannot."""
    reason = custom.no_weights_reason(layer)
    if reason:
        return reason
    name = type(layer).__name__
    if not (isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or hasattr(layer, "get_prunable_weights")):
        if not PruneRegistry.supports(layer):
            if custom.is_custom(layer):
                return (f"custom layer {name} has no pruning config (give it get_prunable_weights() or "
                        "register it with compress.techniques.custom.register)")
            return f"tfmot has no pruning support for {name}"
        try:
            if not PruneRegistry._is_rnn_layer(layer) and not PruneRegistry._weight_names(layer):
                return f"{name} has no prunable weights (only scales/offsets)"
        except KeyError:
            pass
    if m_by_n is not None:
        kernels = kernel_weights(layer)
        ranks = sorted({len(w.shape) for w in kernels})
        if not ranks or any(r not in (2, 4) for r in ranks):
            return (f"tfmot's {m_by_n[0]}:{m_by_n[1]} masks take only rank-2 (Dense) or rank-4 (Conv2D) kernels; "
                    f"{name}'s kernels are rank {'/'.join(map(str, ranks)) or 'none'}")
        short = min(int(w.shape[-2]) for w in kernels)
        if short < m_by_n[1]:
            return (f"{m_by_n[0]}:{m_by_n[1]} groups run along the input channels, and this layer has only {short}: "
                    "no group to sparsify")
    return None


def _prunable_count(layer) -> int:
    weights = kernel_weights(layer)
    if not weights and hasattr(layer, "get_prunable_weights"):
        weights = list(layer.get_prunable_weights())
    return sum(int(np.prod(w.shape)) for w in weights)


#: the layers that make up for the ones kept dense are pruned to at most this
MAX_LAYER_SPARSITY = 0.99


def small_layers(model, m_by_n: tuple[int, int] | None = None, sparsity: float = 0.5) -> tuple[dict[str, str], float]:
    """(layer -> why it stays dense, share of the prunable weights they hold): the smallest prunable layers,
    each under SMALL_LAYER_SHARE, while together they stay within SMALL_LAYERS_BUDGET (less at high
    ``sparsity``: the others, pruned to ``sparsity / (1 - share)``, stay at most MAX_LAYER_SPARSITY)."""
    budget = min(SMALL_LAYERS_BUDGET, 1.0 - sparsity / MAX_LAYER_SPARSITY)
    counts = {layer.name: _prunable_count(layer) for layer in model.layers
              if not isinstance(layer, keras.Model) and prune_support(layer, m_by_n) is None}
    counts = {name: n for name, n in counts.items() if n > 0}
    total = sum(counts.values())
    kept, share = {}, 0.0
    for name, n in sorted(counts.items(), key=lambda item: item[1]):
        if n / total >= SMALL_LAYER_SHARE or share + n / total > budget:
            break
        share += n / total
        kept[name] = (f"kept dense: a small layer ({n} weights, {n / total:.1%} of the prunable ones), where zeros "
                      "cost the most accuracy and save the least; the other layers are pruned harder to make up")
    return {name: kept[name] for name in counts if name in kept}, share  # in the model's order


def _schedule(kind: str, sparsity: float, end_step: int):
    if kind == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=max(1, end_step // 20))
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
                                                end_step=max(1, end_step), frequency=max(1, end_step // 20))


def sparsity_report(model) -> list[LayerSparsity]:
    """Zeros per layer kernel (the weights pruning targets; biases excluded)."""
    rows = []
    for layer in model.layers:
        kernels = [w for w in layer.weights if "kernel" in w.name or "embeddings" in w.name]
        if kernels:
            values = [np.asarray(w.numpy()) for w in kernels]
            zeros = sum(int((v == 0).sum()) for v in values)
            rows.append(LayerSparsity(layer.name, sum(v.size for v in values), zeros))
    return rows


def overall_sparsity(model, layers: list[str] | None = None) -> float:
    rows = [r for r in sparsity_report(model) if layers is None or r.layer in layers]
    total = sum(r.weights for r in rows)
    return sum(r.zeros for r in rows) / total if total else 0.0


def _one_shot_masks(wrapped) -> None:
    """Compute every wrapper's mask once at its schedule's target and apply it (no training loop)."""
    for layer in wrapped.layers:
        if isinstance(layer, PruneLowMagnitude):
            layer.pruning_step.assign(1)  # the step the schedules (and m_by_n) update masks at
            layer.pruning_obj.conditional_mask_update()
            layer.pruning_obj.weight_mask_op()


def prune(model, train=None, loss=None, *, sparsity: float = 0.5, epochs: int = 2, batch_size: int = 32,
          schedule: str = "polynomial", lr: float = DEFAULT_LR, m_by_n: tuple[int, int] | None = None,
          keep_small: bool = True):
    """Prune the supported layers to ``sparsity`` overall (or to an ``m_by_n`` pattern such as (2, 4)); returns
    (stripped model, Outcome).

    ``train`` is a Split (with ``loss``), a :class:`FineTune`, or None (one-shot, no fine-tuning). The
    polynomial schedule reaches its final sparsity at the plan's ``schedule_end`` (60%) of the fine-tuning
    steps, leaving the rest for recovery at the final mask while the learning rate decays; one-shot pruning
    uses the target sparsity directly. ``keep_small`` (not with ``m_by_n``): :func:`small_layers` stay dense
    and the others are pruned to ``sparsity / (1 - their share)``.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if m_by_n is not None:
        m_by_n = tuple(int(v) for v in m_by_n)
        if len(m_by_n) != 2 or not 0 < m_by_n[0] < m_by_n[1]:
            raise ValueError(f"m_by_n must be (m, n) with 0 < m < n, got {m_by_n}")
    tune: FineTune = as_finetune(train, loss, epochs=epochs, batch_size=batch_size, lr=lr)
    outcome = start_outcome(model, f"{m_by_n[0]}:{m_by_n[1]} sparsity" if m_by_n else "prune")
    if outcome.blocked:
        return model, outcome
    dense, dense_share = small_layers(model, sparsity=sparsity) if keep_small and m_by_n is None and sparsity > 0 else ({}, 0.0)
    layer_sparsity = sparsity / (1.0 - dense_share)
    if tune.enabled:
        sched = _schedule(schedule, layer_sparsity, tune.schedule_end_step())
    else:
        sched = tfmot.sparsity.keras.ConstantSparsity(layer_sparsity, begin_step=0, frequency=1)
    if m_by_n is not None:
        sched = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)  # ignored by m_by_n masks

    def wrap(layer):
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=sched, sparsity_m_by_n=m_by_n)

    wrapped = wrap_layers(model, outcome, lambda layer: dense.get(layer.name) or prune_support(layer, m_by_n), wrap)
    if outcome.ran:
        if tune.enabled:
            tune.fit(wrapped, callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), tune.recovery_schedule()])
        else:
            _one_shot_masks(wrapped)
    stripped = rebuild(tfmot.sparsity.keras.strip_pruning(wrapped))
    outcome.details = {"target_sparsity": None if m_by_n else sparsity,
                       "schedule": "m_by_n" if m_by_n else (schedule if tune.enabled else "constant (one-shot)"),
                       "fine_tuning": tune.describe_pruning(),
                       # over the layers pruned and the small ones kept dense: what ``sparsity`` asked for
                       "achieved_sparsity": overall_sparsity(stripped, outcome.applied + list(dense))}
    if dense:
        outcome.details["kept_dense"] = (f"{len(dense)} small layer(s) ({', '.join(dense)}; {dense_share:.1%} of "
                                         f"the prunable weights), the others pruned to {layer_sparsity:.1%}")
    if m_by_n is not None:
        outcome.details["m_by_n"] = f"{m_by_n[0]}:{m_by_n[1]}"
        outcome.details["pattern_ok"] = all(verify_m_by_n(stripped, m_by_n, outcome.applied).values())
    return stripped, outcome


def verify_m_by_n(model, m_by_n=(2, 4), layers: list[str] | None = None) -> dict[str, bool]:
    """Check the m:n pattern on a model's (or a saved model's) kernels: layer -> pattern holds."""
    if not hasattr(model, "layers"):
        model = load_keras(model)
    return {name: all(is_m_by_n(w.numpy(), m_by_n) for w in kernels)
            for name, kernels in kernels_by_layer(model, layers)}


__all__ = ["SCHEDULES", "LayerSparsity", "prune", "prune_support", "small_layers", "sparsity_report", "overall_sparsity",
           "verify_m_by_n", "is_m_by_n"]
