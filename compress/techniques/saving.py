"""A technique's result written back: without optimizer state, in the Keras the user gave (Keras 3 -> Keras 3)."""
from __future__ import annotations

from pathlib import Path

from models.artifacts import atomic_path
from models.keras3 import save_keras3

def save_keras(model, path: Path) -> None:
    """Write the model without optimizer state: a technique's output is for deployment or the next technique,
    and a fine-tuned model's Adam slots would otherwise dwarf its weights (channel-prune cnn: 3.6 MB of
    ``optimizer/vars`` for 1.2 MB). The .keras format ignores ``include_optimizer``, so the model is
    recompiled with a fresh, unbuilt optimizer (weights unchanged), as models.training does."""
    from models.backend import keras  # deferred: models.backend loads TensorFlow

    if getattr(model, "optimizer", None) is not None:
        model.compile(optimizer=keras.optimizers.Adam(), loss=model.loss)
    with atomic_path(path) as tmp:
        model.save(tmp)


def save_result(subject, model, path: Path) -> None:
    """Write a technique's Keras result in the Keras the user gave: a Keras 3 file gets a Keras 3 file back."""
    if subject.keras == "keras3":
        save_keras3(model, path, subject.splits.test.head(16).x)
    else:
        save_keras(model, path)
