"""speech_cnn1d: the seed's keyword-spotting 1-D CNN (001 §4.6), input (100, 40),
Conv1D32-MaxPool-Conv1D64-MaxPool-Flatten-Dense128-Dropout(0.5)-Dense10(softmax).

Task: classify 10 procedural "keywords" from log-mel-like spectrograms (100 frames x 40 mel bins). Each keyword
is a fixed sequence of 3 phonemes (gliding formant bands) drawn from a shared inventory of 6, so words differ
by which phonemes they use and in what order; every utterance is time stretched/shifted, formant shifted,
rescaled and noised (``models.datasets.sequences.keyword_spectrograms``). A logistic regression on the raw
4000 values reaches ~0.97, the CNN ~0.99.

Seed changes: the seed's ``load_data`` returns uniform random features and labels (nothing to learn) and imports
librosa without using it; the procedural spectrograms above replace it (offline, no audio decoding). The layers
are exactly the seed's; the input is a named Input layer ("audio_features") instead of ``input_shape=``.
"""
from models.backend import keras
from models.datasets.sequences import keyword_spectrograms
from models.metrics import ACCURACY
from models.registry import register
from models.spec import ModelSpec


def build(config: dict):
    f1, f2 = config["filters"]
    return keras.Sequential([
        keras.layers.Input((config["frames"], config["mels"]), name="audio_features"),
        keras.layers.Conv1D(f1, 3, activation="relu"),
        keras.layers.MaxPooling1D(2),
        keras.layers.Conv1D(f2, 3, activation="relu"),
        keras.layers.MaxPooling1D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(config["dense"], activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ], name="speech_cnn1d")


def load_data(config: dict, seed: int):
    return keyword_spectrograms(config["samples"], seed, config["frames"], config["mels"])


register(ModelSpec(
    name="speech_cnn1d",
    seed_doc="001 §4.6 (speech recognition CNN)",
    task="keyword spotting on procedural log-mel patterns (10 classes, 100 frames x 40 mels)",
    build=build,
    load_data=load_data,
    metric=ACCURACY,
    quality_bar=0.90,
    config={"filters": (32, 64), "dense": 128, "frames": 100, "mels": 40, "samples": 3000, "epochs": 10,
            "batch_size": 32, "lr": 1e-3},
    tiny={"filters": (4, 8), "dense": 16, "samples": 200, "epochs": 1},
    labels=tuple(f"word{i}" for i in range(10)),
    preprocessing="log-mel-like features, 100 frames x 40 mel bins, values roughly in [-0.6, 2.2]",
    notes=__doc__,
))
