"""lstm_classifier: the seed's LSTM classifier (000 §4), LSTM(128) -> Dense(num_classes, softmax).

Task: classify a noisy 1-D waveform (64 steps, 1 feature) into its family: sine, square, sawtooth, triangle or
chirp, each with random frequency, phase, amplitude, DC offset and noise level
(``models.datasets.sequences.waveforms``).

Seed changes: the seed only defines ``lstm_model(input_shape, num_classes)`` (concatenated on one line, with no
data); here ``input_shape=(64, 1)`` and ``num_classes=5`` are fixed (static sequence length for the exporters)
and the model is trained on the procedural waveforms. The LSTM keeps the seed's 128 units, default activations
and ``unroll=False``. The input is a named Input layer ("waveform") instead of ``input_shape=``. Training:
Adam with a cosine learning-rate decay over the epochs (``train_fn``), which settles the accuracy that
oscillates by +-10 points between epochs at a constant rate.
"""
import math

from models.backend import keras
from models.datasets.sequences import WAVEFORMS, waveforms
from models.metrics import ACCURACY
from models.registry import register
from models.spec import ModelSpec
from models.training import fit


def build(config: dict):
    return keras.Sequential([
        keras.layers.Input((config["length"], 1), name="waveform"),
        keras.layers.LSTM(config["units"]),
        keras.layers.Dense(len(WAVEFORMS), activation="softmax"),
    ], name="lstm_classifier")


def load_data(config: dict, seed: int):
    return waveforms(config["samples"], config["length"], seed)


def train(model, splits, config: dict, seed: int):
    """The default fit with a cosine learning-rate decay (constant Adam makes the LSTM's accuracy oscillate)."""
    lr, epochs = config["lr"], config["epochs"]
    cosine = keras.callbacks.LearningRateScheduler(lambda e: lr * 0.5 * (1 + math.cos(math.pi * e / epochs)))
    return fit(SPEC, model, splits, config, seed, callbacks=[cosine])


SPEC = register(ModelSpec(
    name="lstm_classifier",
    seed_doc="000 §4 (LSTM)",
    task="waveform family classification (5 classes, 64-step sequences)",
    build=build,
    load_data=load_data,
    metric=ACCURACY,
    quality_bar=0.90,
    config={"units": 128, "length": 64, "samples": 3000, "epochs": 15, "batch_size": 32, "lr": 3e-3},
    tiny={"units": 8, "length": 32, "samples": 100, "epochs": 1},
    train_fn=train,
    labels=WAVEFORMS,
    preprocessing="raw samples of one waveform window, shape (64, 1), amplitude roughly in [-2, 2]",
    notes=__doc__,
))
