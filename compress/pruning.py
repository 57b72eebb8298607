"""Magnitude pruning with tfmot, applied per layer so unsupported layers never block the model."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.backend import keras, quiet_stderr
from models.spec import Split

from .outcome import Outcome

with quiet_stderr():
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

SCHEDULES = ("polynomial", "constant")


@dataclass
class LayerSparsity:
    layer: str
    weights: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def prune_support(layer) -> str | None:
    """None if tfmot can prune this layer, else the reason it cannot."""
    if not layer.trainable_weights:
        return "no trainable weights"
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return None
    if not PruneRegistry.supports(layer):
        return f"tfmot has no pruning support for {type(layer).__name__}"
    try:
        if not PruneRegistry._weight_names(layer):  # BatchNormalization, LayerNormalization...
            return f"{type(layer).__name__} has no prunable weights (only scales/offsets)"
    except Exception:
        pass
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
            rows.append(LayerSparsity(layer.name, sum(v.size for v in values), sum(int((v == 0).sum()) for v in values)))
    return rows


def overall_sparsity(model) -> float:
    rows = sparsity_report(model)
    total = sum(r.weights for r in rows)
    return sum(r.zeros for r in rows) / total if total else 0.0


def prune(model, train: Split, loss, *, sparsity: float = 0.5, epochs: int = 2, batch_size: int = 32,
          schedule: str = "polynomial", lr: float = 1e-4):
    """Prune every supported layer to ``sparsity`` while fine-tuning on ``train``; returns (stripped model, Outcome).

    The schedule reaches its final sparsity at 80% of the fine-tuning steps, leaving
    the rest for recovery at the final mask.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    outcome = Outcome("prune")
    steps = max(1, int(np.ceil(len(train) / batch_size)) * max(1, epochs))
    sched = _schedule(schedule, sparsity, int(steps * 0.8))

    def wrap(layer):
        reason = prune_support(layer)
        fresh = layer.__class__.from_config(layer.get_config())  # never touch the caller's model
        if reason is None:
            outcome.applied.append(layer.name)
            return tfmot.sparsity.keras.prune_low_magnitude(fresh, pruning_schedule=sched)
        if layer.weights:
            outcome.skipped[layer.name] = reason
        return fresh

    wrapped = keras.models.clone_model(model, clone_function=wrap)
    _copy_weights(model, wrapped)
    if outcome.ran:
        wrapped.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
        wrapped.fit(train.x, train.y, epochs=max(1, epochs), batch_size=batch_size, verbose=0,
                    callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    outcome.details = {"target_sparsity": sparsity, "schedule": schedule, "epochs": epochs,
                       "achieved_sparsity": overall_sparsity(stripped)}
    return stripped, outcome


def _copy_weights(source, target) -> None:
    """Copy weights layer by layer (wrappers hold the original weights plus mask/threshold variables)."""
    for src, dst in zip(source.layers, target.layers):
        inner = getattr(dst, "layer", dst)
        if src.weights:
            inner.set_weights(src.get_weights())
