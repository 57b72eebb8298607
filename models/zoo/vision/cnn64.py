"""cnn64: the seed's small CNN (002 §1.1), Conv32-MaxPool-Dense64-Dense10 on 64x64x3.

Seed changes: the seed only builds the network (no data, no training). It is
trained here on the offline procedural shapes/textures task
(models/datasets/shapes.py) rendered at 64x64x3, 10 classes. Labels are
integers (sparse categorical cross-entropy); the seed does not compile.
With a single 3x3 conv layer before a 2M-weight Dense, this network only generalises
over random positions when edges have a fixed polarity, so the shared generator draws
objects lighter than their background and 60-90% of the image wide (with fully random
colours, positions and small objects it overfit at ~55% test accuracy). It needs 5,000
images (vs 3,000 for cifar_cnn) to reach the bar.
"""
from models.backend import keras
from models.datasets.shapes import CLASSES, shapes
from models.metrics import ACCURACY
from models.registry import register
from models.spec import ModelSpec


def build(config: dict):
    return keras.Sequential([
        keras.layers.Input((64, 64, 3), name="image"),
        keras.layers.Conv2D(config["filters"], 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(config["dense"], activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="cnn64")


register(ModelSpec(
    name="cnn64",
    seed_doc="002 §1.1 (CNN)",
    task="coloured shape/texture classification, 64x64 RGB (10 classes)",
    build=build,
    load_data=lambda config, seed: shapes(config["samples"], 64, seed),
    metric=ACCURACY,
    quality_bar=0.90,
    config={"filters": 32, "dense": 64, "samples": 5000, "epochs": 15, "batch_size": 64},
    tiny={"filters": 2, "dense": 8, "samples": 200, "epochs": 1},
    labels=CLASSES,
    preprocessing="RGB 64x64, pixel values scaled to [0, 1]",
    notes=__doc__,
))
