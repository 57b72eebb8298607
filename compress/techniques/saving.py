"""A technique's result written back: without optimizer state, in the Keras the user gave (Keras 3 -> Keras 3), and
byte for byte the same for the same weights (no save date or clock time in the file)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from models.artifacts import atomic_path
from models.engines.keras3 import save_keras3

#: what a .keras file's entries and its metadata.json say instead of the time it was written (zip's epoch)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
FIXED_DATE = "1980-01-01@00:00:00"


def reproducible(path: Path) -> None:
    """Rewrite a .keras zip in place without what varies between two saves of the same model: the entries'
    timestamps (model.weights.h5 carries the clock) and metadata.json's ``date_saved``; the bytes then depend on
    the model alone."""
    with zipfile.ZipFile(path) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                if "date_saved" in meta:
                    meta["date_saved"] = FIXED_DATE
                data = json.dumps(meta).encode()
            fixed = zipfile.ZipInfo(info.filename, FIXED_TIME)
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            zf.writestr(fixed, data)


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
        if zipfile.is_zipfile(tmp):
            reproducible(tmp)


def save_native(model, path: Path) -> None:
    """A Keras 3 model pruned natively (a graph the bridge cannot rebuild): saved by Keras 3, without optimizer
    state, reproducibly."""
    import keras  # deferred: Keras 3 (TensorFlow)

    if getattr(model, "optimizer", None) is not None:
        model.compile(optimizer=keras.optimizers.Adam(), loss=model.loss)
    with atomic_path(path) as tmp:
        model.save(tmp)
        reproducible(tmp)


def save_result(subject, model, path: Path) -> None:
    """Write a technique's Keras result in the Keras the user gave: a Keras 3 file gets a Keras 3 file back."""
    if subject.keras == "keras3_native":
        save_native(model, path)
    elif subject.keras == "keras3":
        with atomic_path(path) as tmp:
            save_keras3(model, tmp, subject.splits.test.head(16).x)
            reproducible(tmp)
    else:
        save_keras(model, path)
