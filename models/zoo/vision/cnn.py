"""cnn: the seed's CNN (000 §2), Conv32-Conv64-MaxPool-Dense128-Dense10 on 28x28x1.

Seed change: the seed only builds the network. It is trained here on
scikit-learn's 8x8 digits resized to 28x28 (offline); ``dataset="mnist"``
selects the real MNIST loader, which downloads and so is never the default.
"""
from models.backend import keras
from models.datasets.downloads import mnist
from models.datasets.sklearn_data import digits_28
from models.metrics import ACCURACY
from models.registry import register
from models.spec import ModelSpec


def build(config: dict):
    f1, f2, dense = config["filters"][0], config["filters"][1], config["dense"]
    return keras.Sequential([
        keras.layers.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(f1, 3, activation="relu"),
        keras.layers.Conv2D(f2, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(dense, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="cnn")


def load_data(config: dict, seed: int):
    if config.get("dataset", "digits") == "mnist":
        return mnist(seed)
    return digits_28(seed)


register(ModelSpec(
    name="cnn",
    seed_doc="000 §2 (CNN)",
    task="handwritten digit classification (10 classes)",
    build=build,
    load_data=load_data,
    metric=ACCURACY,
    quality_bar=0.95,
    config={"filters": (32, 64), "dense": 128, "epochs": 12, "batch_size": 32, "dataset": "digits"},
    tiny={"filters": (4, 8), "dense": 16, "epochs": 1},
    labels=tuple(str(i) for i in range(10)),
    preprocessing="grayscale 28x28, pixel values scaled to [0, 1]",
    notes=__doc__,
))
