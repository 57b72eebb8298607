"""cifar_cnn: the seed's CIFAR-10 CNN (001 §2.1), Conv32-Pool-Conv64-Pool-Dense64-Dense10 on 32x32x3.

Seed changes: the seed trains on ``keras.datasets.cifar10``, which downloads.
The default task here is offline: procedural coloured shapes and textures in
10 classes (models/datasets/shapes.py) at 32x32x3, with random positions,
sizes, colours, gradient backgrounds and pixel noise. ``dataset="cifar10"``
selects the real CIFAR-10 (downloads, so never the default; its bar would be
lower). Labels are integers with sparse categorical cross-entropy instead of
the seed's one-hot + categorical cross-entropy (same loss, no conversion).
"""
import numpy as np

from models.backend import keras
from models.datasets import split_arrays
from models.datasets.shapes import CLASSES, shapes
from models.errors import UserError
from models.metrics import ACCURACY
from models.registry import register
from models.spec import ModelSpec


def build(config: dict):
    f1, f2 = config["filters"]
    return keras.Sequential([
        keras.layers.Input((32, 32, 3), name="image"),
        keras.layers.Conv2D(f1, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(f2, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(config["dense"], activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="cifar_cnn")


def cifar10(seed: int, limit: int | None = None):
    """keras.datasets.cifar10 scaled to [0, 1] (downloads on first use; fails cleanly offline)."""
    try:
        (x_tr, y_tr), (x_te, y_te) = keras.datasets.cifar10.load_data()
    except Exception as e:
        raise UserError(f"cannot load CIFAR-10 (it downloads on first use): {e}") from None
    x = np.concatenate([x_tr, x_te]).astype("float32") / 255.0
    y = np.concatenate([y_tr, y_te]).reshape(-1).astype("int64")
    if limit:
        x, y = x[:limit], y[:limit]
    return split_arrays(x, y, seed)


def load_data(config: dict, seed: int):
    if config.get("dataset", "shapes") == "cifar10":
        return cifar10(seed, config.get("limit"))
    return shapes(config["samples"], 32, seed)


register(ModelSpec(
    name="cifar_cnn",
    seed_doc="001 §2.1 (CNN on CIFAR-10)",
    task="coloured shape/texture classification, 32x32 RGB (10 classes; offline CIFAR-10 stand-in)",
    build=build,
    load_data=load_data,
    metric=ACCURACY,
    quality_bar=0.90,
    config={"filters": (32, 64), "dense": 64, "samples": 3000, "epochs": 15, "batch_size": 64,
            "dataset": "shapes"},
    tiny={"filters": (4, 8), "dense": 8, "samples": 200, "epochs": 1},
    labels=CLASSES,
    preprocessing="RGB 32x32, pixel values scaled to [0, 1]",
    notes=__doc__,
))
