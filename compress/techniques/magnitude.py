"""Magnitude pruning without tfmot: masks on the weights each layer multiplies its input by, for Keras 3 models.

tfmot has no Keras 3 support (tensorflow/model-optimization#1119), so a Keras 3 model (keras.applications,
keras-hub, graphs with ``keras.ops`` between layers, the user's own layers) is pruned here, natively: no wrapper
layers, no rebuilt graph. Every layer is visited, nested models and the sublayers of composite layers included
(a keras.applications backbone inside the user's model, the EinsumDense projections inside MultiHeadAttention),
and each leaf layer is pruned by the table :data:`KERNELS` (weights by attribute, as tfmot's ``prune_registry``
names them) or skipped with the reason. A layer of the user's that defines ``get_prunable_weights()`` (tfmot's
``PrunableLayer`` protocol) is pruned by that.

The sparsity follows tfmot's polynomial schedule (0 -> target by ``schedule_end`` of the fine-tuning steps, mask
updates every ``frequency`` steps), and the masks are applied after every training step, so the model that comes
out is the same class, with the same layers and names, with zeros in its kernels: it saves as a Keras 3 file that
loads with the user's classes. Without data it prunes one-shot at the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compress.techniques.outcome import Outcome

#: leaf layer class -> the attributes holding the weights that multiply its input (tfmot's prune_registry names)
KERNELS: dict[str, tuple[str, ...]] = {
    "Dense": ("kernel",), "EinsumDense": ("kernel",),
    "Conv1D": ("kernel",), "Conv2D": ("kernel",), "Conv3D": ("kernel",),
    "Conv1DTranspose": ("kernel",), "Conv2DTranspose": ("kernel",), "Conv3DTranspose": ("kernel",),
    "DepthwiseConv1D": ("depthwise_kernel",), "DepthwiseConv2D": ("depthwise_kernel",),
    "SeparableConv1D": ("pointwise_kernel",), "SeparableConv2D": ("pointwise_kernel",),
    "Embedding": ("embeddings",), "ReversibleEmbedding": ("embeddings",),
    "LSTMCell": ("kernel", "recurrent_kernel"), "GRUCell": ("kernel", "recurrent_kernel"),
    "SimpleRNNCell": ("kernel", "recurrent_kernel"),
}
#: leaf layers whose weights are scales, offsets or statistics: nothing multiplies the input that a zero could drop
NO_KERNEL = {"BatchNormalization": "only a scale, an offset and running statistics",
             "LayerNormalization": "only a scale and an offset", "GroupNormalization": "only a scale and an offset",
             "RMSNormalization": "only a scale", "Normalization": "only the data's mean and variance",
             "UnitNormalization": "no weights", "PReLU": "only the slopes of its activation"}
SCHEDULE_END = 0.6


@dataclass
class LayerSparsity:
    layer: str
    weights: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


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


@dataclass
class Target:
    """One weight to prune: the layer path it belongs to and the variable."""

    layer: str
    variable: object

    @property
    def size(self) -> int:
        return int(np.prod(self.variable.shape))


def _sublayers(layer) -> list:
    return [sub for sub in layer._flatten_layers(include_self=False, recursive=False)]


def prunable(model) -> tuple[list[Target], dict[str, str]]:
    """Every weight to prune (nested models and composite layers walked), and each leaf layer left alone with why."""
    targets, skipped, seen = [], {}, set()

    def visit(layer, path: str) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        name = f"{path}/{layer.name}" if path else layer.name
        own = getattr(layer, "get_prunable_weights", None)
        if callable(own):
            targets.extend(Target(name, v) for v in own())
            return
        kind = type(layer).__name__
        if kind in KERNELS:
            for attr in KERNELS[kind]:
                var = getattr(layer, attr, None)
                if var is not None:
                    targets.append(Target(name, var))
            for sub in _sublayers(layer):  # a cell's parent (LSTM) holds nothing; cells are visited through it
                visit(sub, name)
            return
        subs = _sublayers(layer)
        for sub in subs:
            visit(sub, name)
        own_weights = [w for w in layer.weights if not any(w is s for sub in subs for s in sub.weights)]
        if not subs and not layer.weights:
            return
        if kind in NO_KERNEL:
            skipped[name] = f"{kind} has {NO_KERNEL[kind]}"
        elif own_weights and not subs:
            skipped[name] = (f"no pruning rule for {kind}: which of its weights multiply the input is unknown (a "
                             "layer of your own can say so with get_prunable_weights(), as tfmot's PrunableLayer)")

    for layer in _sublayers(model):
        visit(layer, "")
    return targets, skipped


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """1 where |w| is among the largest (1 - sparsity) of the values, 0 for the rest (exactly that many zeros)."""
    k = int(math.floor(sparsity * w.size))
    mask = np.ones(w.size, dtype=w.dtype)
    if k > 0:
        mask[np.argsort(np.abs(w), axis=None, kind="stable")[:k]] = 0
    return mask.reshape(w.shape)


def m_by_n_mask(w: np.ndarray, m: int, n: int) -> np.ndarray:
    """Zero the m smallest of every n consecutive values along the input-channel axis (-2; TFLite's layout)."""
    moved = np.moveaxis(w, -2, -1)
    pad = (-moved.shape[-1]) % n
    padded = np.pad(np.abs(moved), [(0, 0)] * (moved.ndim - 1) + [(0, pad)], constant_values=np.inf)
    groups = padded.reshape(*padded.shape[:-1], -1, n)
    order = np.argsort(groups, axis=-1, kind="stable")
    mask = np.ones_like(groups, dtype=w.dtype)
    np.put_along_axis(mask, order[..., :m], 0, axis=-1)
    mask = mask.reshape(*padded.shape)[..., : moved.shape[-1]]
    return np.moveaxis(mask, -1, -2)


def m_by_n_reason(target: Target, n: int) -> str | None:
    rank = len(target.variable.shape)
    if rank not in (2, 4):
        return f"m:n masks take rank-2 (Dense) or rank-4 (Conv2D) kernels; this one is rank {rank}"
    if int(target.variable.shape[-2]) < n:
        return f"groups of {n} run along the input channels, and this layer has only {target.variable.shape[-2]}"
    return None


def polynomial_sparsity(step: int, end_step: int, target: float) -> float:
    """tfmot's PolynomialDecay (power 3) from 0 at step 0 to ``target`` at ``end_step``."""
    if end_step <= 0 or step >= end_step:
        return target
    return target * (1.0 - (1.0 - step / end_step) ** 3)


class Masks:
    """The current masks, recomputed at a sparsity (or m:n pattern) and applied to the variables (as tensors, so
    the per-step apply stays inside the backend)."""

    def __init__(self, targets: list[Target], m_by_n: tuple[int, int] | None = None):
        import keras  # deferred: Keras 3 (TensorFlow), for Keras 3 models only

        self.ops, self.targets, self.m_by_n = keras.ops, targets, m_by_n
        self.masks = [None] * len(targets)

    def update(self, sparsity: float) -> None:
        for i, t in enumerate(self.targets):
            w = np.asarray(t.variable.numpy(), dtype="float32")
            mask = m_by_n_mask(w, *self.m_by_n) if self.m_by_n else magnitude_mask(w, sparsity)
            self.masks[i] = self.ops.convert_to_tensor(mask, dtype=t.variable.dtype)

    def apply(self) -> None:
        for t, mask in zip(self.targets, self.masks):
            if mask is not None:
                t.variable.assign(self.ops.multiply(t.variable, mask))


def copy_of(model):
    """A model of the same graph with its own weights (the technique must not change the model it is given: the
    gate compares the result with it). clone_model for functional and Sequential models; a subclassed one (a
    keras-hub backbone) goes through its own config, as saving does."""
    import keras  # deferred: Keras 3 (TensorFlow), for Keras 3 models only

    try:
        twin = keras.models.clone_model(model)
    except Exception:  # subclassed: rebuild from its config, build it with a call, then copy the weights
        twin = type(model).from_config(model.get_config())
        twin(keras.tree.map_structure(lambda t: keras.ops.zeros([1 if d is None else d for d in t.shape], t.dtype),
                                      model.inputs if len(model.inputs) > 1 else model.inputs[0]))
    twin.set_weights(model.get_weights())
    return twin


def prune(model, train=None, *, sparsity: float = 0.5, epochs: int = 2, batch_size: int = 32, lr: float = 1e-3,
          m_by_n: tuple[int, int] | None = None, loss=None, seed: int = 0, frequency: int | None = None):
    """Prune a copy of a Keras 3 model to ``sparsity`` (or an ``m_by_n`` pattern such as (2, 4)); returns
    (model, Outcome). ``train``: a Split with labels to fine-tune on (the model's own loss, or ``loss``), else
    one-shot at the target."""
    import keras  # deferred: Keras 3 (TensorFlow), for Keras 3 models only

    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    outcome = Outcome(f"{m_by_n[0]}:{m_by_n[1]} sparsity" if m_by_n else "prune")
    model = copy_of(model)
    targets, outcome.skipped = prunable(model)
    if m_by_n is not None:
        kept = []
        for t in targets:
            reason = m_by_n_reason(t, m_by_n[1])
            if reason:
                outcome.skipped[t.layer] = reason
            else:
                kept.append(t)
        targets = kept
    outcome.applied = list(dict.fromkeys(t.layer for t in targets))
    if not targets:
        return model, outcome
    masks = Masks(targets, m_by_n)
    fine_tune = train is not None and getattr(train, "y", None) is not None and epochs > 0
    if fine_tune:
        n = len(train.y)
        steps = max(1, math.ceil(n / batch_size)) * epochs
        end = max(1, int(SCHEDULE_END * steps))
        every = frequency or max(1, end // 20)

        class UpdateMasks(keras.callbacks.Callback):
            step = 0

            def on_train_batch_begin(self, batch, logs=None):
                if self.step % every == 0 and self.step <= end:
                    masks.update(polynomial_sparsity(self.step, end, sparsity))

            def on_train_batch_end(self, batch, logs=None):
                self.step += 1
                masks.apply()

        keras.utils.set_random_seed(seed)
        # jit_compile off: XLA's CPU reductions are not deterministic (the same command must give the same file)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss or model.loss, jit_compile=False)
        model.fit(train.x, train.y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                  callbacks=[UpdateMasks()])
    masks.update(sparsity)
    masks.apply()
    total = sum(t.size for t in targets)
    zeros = sum(int((np.asarray(t.variable.numpy()) == 0).sum()) for t in targets)
    outcome.details = {"target_sparsity": None if m_by_n else sparsity, "achieved_sparsity": zeros / total,
                       "schedule": "m_by_n" if m_by_n else ("polynomial" if fine_tune else "constant (one-shot)"),
                       "fine_tuning": (f"{epochs} epoch(s) at lr {lr:g}, sparsity reaching its target at "
                                       f"{SCHEDULE_END:.0%} of the steps" if fine_tune else "none (one-shot)"),
                       "engine": "Keras 3 (native masks, no tfmot)"}
    return model, outcome


def sparsity_report(model) -> list[LayerSparsity]:
    """Zeros per pruned layer (by its path inside nested models), over the weights this module prunes."""
    rows: dict[str, LayerSparsity] = {}
    for t in prunable(model)[0]:
        w = np.asarray(t.variable.numpy())
        row = rows.setdefault(t.layer, LayerSparsity(t.layer, 0, 0))
        row.weights += w.size
        row.zeros += int((w == 0).sum())
    return list(rows.values())


def m_by_n_holds(model, m_by_n=(2, 4)) -> bool:
    """The m:n pattern on every rank-2/4 kernel this module prunes (the ones an m:n mask could take)."""
    return all(is_m_by_n(np.asarray(t.variable.numpy()), m_by_n) for t in prunable(model)[0]
               if m_by_n_reason(t, m_by_n[1]) is None)
