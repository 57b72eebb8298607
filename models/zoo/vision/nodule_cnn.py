"""nodule_cnn: the seed's lung-nodule CNN (001 §4.4 medical imaging), Conv32-Pool-Conv64-Pool-
Conv128-Pool-Flatten-Dense512-Dropout(0.5)-Dense1(sigmoid) on 128x128x3, binary cross-entropy.

Seed changes: the seed streams real CT images from ``data/train`` and ``data/validation``
directories with ``ImageDataGenerator.flow_from_directory`` (deprecated API, data not
available). Here the data are procedural CT-like lung patches, half of them with a nodule
(models/datasets/ct_patches.py): dark parenchyma, chest wall, bright vessels and end-on
vessel dots as distractors, noise. Labels are 0/1; the metric is ROC-AUC on the test
split. The seed's random flips/rotations and 25 epochs are replaced by more generated
samples and fewer epochs (the training-time budget), with Adam at lr 5e-4 instead of the
default 1e-3 (the 12.8M-weight Dense512 made 1e-3 training unstable); validation is a 10% split.
The seed's full architecture (filters 32/64/128, Dense512, Dropout 0.5) is kept.
"""
from models.backend import keras
from models.datasets.ct_patches import ct_patches
from models.metrics import ROC_AUC
from models.registry import register
from models.spec import ModelSpec


def build(config: dict):
    f1, f2, f3 = config["filters"]
    return keras.Sequential([
        keras.layers.Input((128, 128, 3), name="image"),
        keras.layers.Conv2D(f1, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(f2, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(f3, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(config["dense"], activation="relu"),
        keras.layers.Dropout(config.get("dropout", 0.5)),
        keras.layers.Dense(1, activation="sigmoid"),
    ], name="nodule_cnn")


register(ModelSpec(
    name="nodule_cnn",
    seed_doc="001 §4.4 (CNN lung nodule detection)",
    task="CT-like lung patch: nodule present? (binary)",
    build=build,
    load_data=lambda config, seed: ct_patches(config["samples"], 128, seed, val=0.1, test=0.2),
    metric=ROC_AUC,
    quality_bar=0.95,
    config={"filters": (32, 64, 128), "dense": 512, "samples": 1000, "epochs": 10, "batch_size": 32, "lr": 5e-4},
    tiny={"filters": (2, 4, 4), "dense": 8, "samples": 40, "epochs": 1},
    loss="binary_crossentropy",
    labels=("no nodule", "nodule"),
    preprocessing="grey CT window as RGB 128x128, pixel values scaled to [0, 1]",
    notes=__doc__,
))
