"""Magnitude pruning and m:n structured sparsity with tfmot, applied per layer so unsupported layers never block.

``prune`` wraps every supported layer in ``prune_low_magnitude`` (constant or polynomial schedule, or a 2:4
``sparsity_m_by_n`` pattern), fine-tunes with ``UpdatePruningStep`` when it has data, and strips the wrappers.
Without fine-tuning data it prunes one-shot: the masks are computed once at the target sparsity and applied.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.backend import quiet_stderr

from . import custom
from .finetune import DEFAULT_LR, FineTune, as_finetune
from .selective import kernel_weights, kernels_by_layer, rebuild, start_outcome, wrap_layers

with quiet_stderr():
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

SCHEDULES = ("polynomial", "constant")


@dataclass
class LayerSparsity:
    layer: str
    weights: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


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
                        "register it with compress.custom.register)")
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
          schedule: str = "polynomial", lr: float = DEFAULT_LR, m_by_n: tuple[int, int] | None = None):
    """Prune every supported layer to ``sparsity`` (or to an ``m_by_n`` pattern such as (2, 4)); returns
    (stripped model, Outcome).

    ``train`` is a Split (with ``loss``), a :class:`FineTune`, or None (one-shot, no fine-tuning). The
    polynomial schedule reaches its final sparsity at the plan's ``schedule_end`` (80%) of the fine-tuning
    steps, leaving the rest for recovery at the final mask; one-shot pruning uses the target sparsity directly.
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
    if tune.enabled:
        sched = _schedule(schedule, sparsity, int(tune.steps() * tune.schedule_end))
    else:
        sched = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    if m_by_n is not None:
        sched = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)  # ignored by m_by_n masks

    def wrap(layer):
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=sched, sparsity_m_by_n=m_by_n)

    wrapped = wrap_layers(model, outcome, lambda layer: prune_support(layer, m_by_n), wrap)
    if outcome.ran:
        if tune.enabled:
            tune.fit(wrapped, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        else:
            _one_shot_masks(wrapped)
    stripped = rebuild(tfmot.sparsity.keras.strip_pruning(wrapped))
    outcome.details = {"target_sparsity": None if m_by_n else sparsity,
                       "schedule": "m_by_n" if m_by_n else (schedule if tune.enabled else "constant (one-shot)"),
                       "fine_tuning": tune.describe_pruning(),
                       "achieved_sparsity": overall_sparsity(stripped, outcome.applied)}
    if m_by_n is not None:
        outcome.details["m_by_n"] = f"{m_by_n[0]}:{m_by_n[1]}"
        outcome.details["pattern_ok"] = all(verify_m_by_n(stripped, m_by_n, outcome.applied).values())
    return stripped, outcome


def is_m_by_n(weights: np.ndarray, m_by_n=(2, 4)) -> bool:
    """Every group of n consecutive input-channel values (TFLite layout, as tfmot masks them) has >= m zeros."""
    m, n = m_by_n
    w = np.asarray(weights)
    if w.ndim == 2:
        rows = w.T
    elif w.ndim == 4:
        rows = np.transpose(w, (3, 0, 1, 2)).reshape(-1, w.shape[2])
    else:
        return False
    pad = (-rows.shape[1]) % n
    rows = np.pad(rows, ((0, 0), (0, pad)))
    blocks = rows.reshape(rows.shape[0], -1, n)
    return bool(((blocks == 0).sum(-1) >= m).all())


def verify_m_by_n(model, m_by_n=(2, 4), layers: list[str] | None = None) -> dict[str, bool]:
    """Check the m:n pattern on a model's (or a saved model's) kernels: layer -> pattern holds."""
    if not hasattr(model, "layers"):
        from models.loading import load_keras

        model = load_keras(model)
    return {name: all(is_m_by_n(w.numpy(), m_by_n) for w in kernels)
            for name, kernels in kernels_by_layer(model, layers)}


__all__ = ["SCHEDULES", "LayerSparsity", "prune", "prune_support", "sparsity_report", "overall_sparsity",
           "verify_m_by_n", "is_m_by_n"]
