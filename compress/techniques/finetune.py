"""How a technique fine-tunes a model: ``fit()`` on (x, y) with the model's loss, or not at all, with the reason.

Zoo models trained by ``fit()`` are fine-tuned on their spec's train split. A ``train_fn`` is a custom
loop; most of those optimise something ``fit(x, y)`` cannot (a GAN's adversarial game, an RL agent's
TD targets, word2vec's negative sampling), so techniques run one-shot for them and say so. The few zoo
train_fns that *are* ``fit()`` plus extras are listed in :data:`FIT_EQUIVALENT` with the extras kept.

The default recipe follows tfmot's Keras pruning guide: fine-tune at the learning rate the model was trained
with (Adam's default 1e-3 when it set none) for a quarter of its own training epochs (at least 2); a user's
file, whose training epochs are unknown, for at least MIN_STEPS steps (2 epochs were too few: see MIN_STEPS). At a
tenth of that rate a pruned model barely recovers (cnn at 80% sparsity: 0.98 -> 0.91 in 2 epochs at 1e-4,
0.975 at 1e-3; cnn64 at 50%: 0.944 -> 0.835 at 1e-4, 0.937 in 4 epochs at 1e-3).

Pruning holds that rate while the sparsity ramps up (the first :attr:`FineTune.schedule_end` of the steps),
then lets it decay along a cosine (:class:`HoldThenCosine`) while the final mask recovers: at a constant rate
the fine-tune ends wherever its last noisy step leaves it (lstm_classifier, trained on a cosine rate: 0.952
-> 0.911/0.915/0.917 on three seeds at a constant 3e-3, 0.953-0.977 with the decay).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import math

import numpy as np

from models.backend import keras
from models.training import seed_everything
from models.spec import Inputs, ModelSpec, Split, Splits, n_samples

#: zoo models whose train_fn is fit() on the spec's loss plus extras that fine-tuning keeps (or may drop:
#: learning-rate callbacks). name -> (what the train_fn adds, config -> extra fit kwargs)
FIT_EQUIVALENT: dict[str, tuple[str, Callable[[dict], dict]]] = {
    "lstm": ("fit() with a ReduceLROnPlateau callback (not needed for a short fine-tune)", lambda c: {}),
    "lstm_classifier": ("fit() with a cosine learning-rate schedule (not needed for a short fine-tune)",
                        lambda c: {}),
    "gnn": ("fit() on the train nodes (negative labels are masked out)", lambda c: {"batch_size": 1}),
    "vqa_fusion": ("fit() with a cosine-decaying learning rate (not needed for a short fine-tune)", lambda c: {}),
    "av_fusion": ("fit() with a cosine-decaying learning rate (not needed for a short fine-tune)", lambda c: {}),
    "fraud_dnn": ("fit() with a positive-class weight",
                  lambda c: {"class_weight": {0: 1.0, 1: float(c.get("pos_weight", 1.0))}}),
}


@dataclass
class FineTune:
    """Data and settings for fine-tuning, or the reason there is none (``reason``): then techniques run one-shot."""

    data: Split | None = None
    loss: Any = None
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    fit_kwargs: dict = field(default_factory=dict)
    reason: str | None = None
    #: a few inputs for data-only steps (QAT range calibration); may exist without labels
    calibration: Inputs | None = None
    how: str = "fit() on the training split"
    #: pruning: the fraction of the fine-tuning steps at which the sparsity schedule reaches its target; the
    #: rest recovers at the final mask while the rate decays (ending at 100% cost lstm_classifier 4.7 points at
    #: 50%; at 80% the decay leaves too few steps at a useful rate: 0.935 on one of three seeds, 0.6: >= 0.950)
    schedule_end: float = 0.6
    #: where ``epochs`` and ``lr`` came from, for describe()
    epochs_from: str = ""
    lr_from: str = ""
    #: fit() starts from this seed with deterministic ops: the same plan and model give the same weights
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return self.reason is None and self.data is not None and self.epochs > 0

    def steps(self) -> int:
        if not self.enabled:
            return 0
        batch = self.fit_kwargs.get("batch_size", self.batch_size)
        return max(1, int(np.ceil(len(self.data) / batch))) * self.epochs

    def describe(self) -> str:
        if not self.enabled:
            return f"none ({self.reason or 'no training data'})"
        epochs = f" ({self.epochs_from})" if self.epochs_from else ""
        lr = f" ({self.lr_from})" if self.lr_from else ""
        return f"{self.how}: {self.epochs} epoch(s){epochs} on {len(self.data)} samples, lr {self.lr:g}{lr}"

    def schedule_end_step(self) -> int:
        """The step at which the pruning schedule reaches its target (and the learning rate starts to decay)."""
        return max(1, int(self.steps() * self.schedule_end))

    def describe_pruning(self) -> str:
        """describe() plus where the sparsity schedule ends and how the rate decays after it (pruning only)."""
        if not self.enabled:
            return self.describe()
        end, steps = self.schedule_end_step(), self.steps()
        return (f"{self.describe()}; sparsity schedule ends at step {end} of {steps} ({self.schedule_end:.0%}), "
                f"then the lr decays along a cosine to {RECOVERY_LR_FLOOR:g}x by step {steps}")

    def recovery_schedule(self) -> "HoldThenCosine":
        """The pruning learning-rate callback: held until the schedule ends, then a cosine decay."""
        return HoldThenCosine(self.lr, self.schedule_end_step(), self.steps())

    def fit(self, model, callbacks=(), lr: float | None = None):
        """Compile with Adam + the loss and fit; labels < 0 (unlabelled, e.g. graph nodes) get zero weight."""
        if not self.enabled:
            return model
        seed_everything(self.seed)
        model.compile(optimizer=keras.optimizers.Adam(lr or self.lr), loss=self.loss)
        kwargs = {"batch_size": self.batch_size, **self.fit_kwargs}
        y = self.data.y
        if isinstance(y, np.ndarray) and y.dtype.kind in "iu" and (y < 0).any():
            kwargs["sample_weight"] = (y >= 0).astype("float32")
            y = np.maximum(y, 0)
        model.fit(self.data.x, y, epochs=self.epochs, verbose=0, shuffle=True, callbacks=list(callbacks), **kwargs)
        return model

    def without(self, reason: str) -> "FineTune":
        """The same calibration data, no fine-tuning (one-shot), with the reason."""
        return FineTune(reason=reason, calibration=self.calibration, loss=self.loss, seed=self.seed)


#: after the pruning schedule ends, the learning rate decays along a cosine to this fraction of itself
RECOVERY_LR_FLOOR = 0.02


class HoldThenCosine(keras.callbacks.Callback):
    """Learning rate ``lr`` for ``hold`` steps, then a cosine decay to ``RECOVERY_LR_FLOOR * lr`` at ``total``.

    A callback (not an optimizer schedule) so nothing custom lands in a saved model's compile config.
    """

    def __init__(self, lr: float, hold: int, total: int):
        super().__init__()
        self.lr, self.hold, self.total, self.step = float(lr), int(hold), int(total), 0

    def rate(self, step: int) -> float:
        if step < self.hold:
            return self.lr
        done = min(1.0, (step + 1 - self.hold) / max(1, self.total - self.hold))  # the last step at the floor
        return self.lr * (RECOVERY_LR_FLOOR + (1 - RECOVERY_LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * done)))

    def on_train_batch_begin(self, batch, logs=None):
        keras.backend.set_value(self.model.optimizer.learning_rate, self.rate(self.step))
        self.step += 1


#: fine-tuning epochs as a fraction of the model's own training epochs (at least MIN_EPOCHS)
EPOCHS_FRACTION = 0.25
MIN_EPOCHS = 2
DEFAULT_LR = 1e-3  # Adam's default, what models.training.fit uses when the config sets no lr
#: a model whose training epochs are unknown (a user's file) fine-tunes for at least this many steps, in at most
#: MAX_EPOCHS epochs. Two epochs were the default: a Keras 3 digits CNN (fp32 0.965 on a test split it never saw,
#: 1006 samples, 32 steps an epoch) pruned to 50% scored 0.930-0.946 on seeds 0-3; in 8 epochs 0.957-0.965, in
#: 16 epochs (500 steps) 0.967-0.970
MIN_STEPS = 500
MAX_EPOCHS = 20


def default_epochs(config: dict, steps_per_epoch: int | None = None) -> tuple[int, str]:
    """(epochs, where from): a quarter of the model's own training epochs, at least MIN_EPOCHS; when those are
    unknown, enough epochs of ``steps_per_epoch`` for MIN_STEPS steps (at least MIN_EPOCHS, at most MAX_EPOCHS)."""
    trained = config.get("epochs")
    if not trained:
        if not steps_per_epoch:
            return MIN_EPOCHS, "default"
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, int(np.ceil(MIN_STEPS / steps_per_epoch))))
        return epochs, (f"its training epochs are unknown: {MIN_STEPS} steps of {steps_per_epoch} an epoch, "
                        f"{MIN_EPOCHS} to {MAX_EPOCHS} epochs")
    return max(MIN_EPOCHS, int(np.ceil(EPOCHS_FRACTION * trained))), \
        f"{EPOCHS_FRACTION:.0%} of its {trained} training epochs, at least {MIN_EPOCHS}"


def default_lr(config: dict) -> tuple[float, str]:
    """(lr, where from): the learning rate the model was trained with."""
    if config.get("lr"):
        return float(config["lr"]), "its training learning rate"
    return DEFAULT_LR, "Adam's default, as it was trained"


def for_spec(spec: ModelSpec, config: dict, splits: Splits, *, epochs: int | None = None, lr: float | None = None,
             limit: int | None = None, seed: int = 0) -> FineTune:
    """The fine-tuning plan for a zoo model (``limit``: use only the first N training samples); ``epochs`` and
    ``lr`` default to :func:`default_epochs` / :func:`default_lr` of the model's training config."""
    epochs_from = lr_from = ""
    train = splits.train.head(limit) if limit else splits.train
    batch = (config or {}).get("batch_size", 32)
    if epochs is None:
        epochs, epochs_from = default_epochs(config or {}, int(np.ceil(n_samples(train.x) / batch)))
    if lr is None:
        lr, lr_from = default_lr(config or {})
    calibration = spec.calibration(splits, min(64, n_samples(splits.train.x)))
    if not spec.trainable:
        return FineTune(reason=f"{spec.name} is not trained (an untrained workload, trainable=False): there is "
                               "no training objective to fine-tune against", calibration=calibration)
    if spec.train_fn is not None and spec.name not in FIT_EQUIVALENT:
        return FineTune(reason=f"{spec.name} is trained by a custom loop (train_fn: {spec.task}); fit() on (x, y) "
                               "would optimise a different objective", calibration=calibration, loss=spec.loss)
    if spec.loss is None or train.y is None:
        return FineTune(reason=f"{spec.name} has no supervised loss/labels to fine-tune with",
                        calibration=calibration)
    how, extra = FIT_EQUIVALENT.get(spec.name, ("fit() on the training split", lambda c: {}))
    return FineTune(train, spec.loss, epochs, batch, lr, fit_kwargs=extra(config), calibration=calibration, how=how,
                    epochs_from=epochs_from, lr_from=lr_from, seed=seed)


def as_finetune(train, loss=None, *, epochs: int = 1, batch_size: int = 32, lr: float = 1e-4) -> FineTune:
    """Accept a FineTune, a Split (+ loss), or None (one-shot) wherever a technique takes data."""
    if isinstance(train, FineTune):
        return train
    if train is None:
        return FineTune(reason="no training data given", loss=loss)
    if loss is None:
        return FineTune(reason="no loss given", calibration=train.x)
    return FineTune(train, loss, epochs, batch_size, lr, calibration=train.x)
