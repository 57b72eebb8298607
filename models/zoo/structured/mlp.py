"""mlp: the seed's DNN (000 §1), Dense 64-32-3 on iris.

Seed change: the seed imports ``tensorflow.keras.datasets.iris``, which does not
exist; iris comes from scikit-learn (shipped on disk) and is standardised with
the training split's statistics.
"""
from models.backend import keras
from models.datasets.sklearn_data import iris
from models.metrics import ACCURACY
from models.registry import register
from models.spec import ModelSpec


def build(config: dict):
    return keras.Sequential([
        keras.layers.Input((4,), name="features"),
        keras.layers.Dense(config["units"][0], activation="relu"),
        keras.layers.Dense(config["units"][1], activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ], name="mlp")


register(ModelSpec(
    name="mlp",
    seed_doc="000 §1 (DNN)",
    task="iris flower classification (3 classes)",
    build=build,
    load_data=lambda config, seed: iris(seed),
    metric=ACCURACY,
    quality_bar=0.90,
    config={"units": (64, 32), "epochs": 60, "batch_size": 16, "lr": 1e-2},
    tiny={"units": (8, 8), "epochs": 3},
    labels=("setosa", "versicolor", "virginica"),
    preprocessing="standardise the 4 features with the training mean/std",
    notes=__doc__,
))
