"""lstm: the seed's time-series LSTM (001 §2.2, also 002 §1.2), LSTM(50, relu) on (10, 1) -> Dense(1).

Task: one-step-ahead forecast of a noisy multi-seasonal series (hourly-like: 24, 12 and 8 step seasons, see
``models.datasets.sequences.SEASONS``) plus i.i.d. Gaussian noise of standard deviation ``config["sigma"]``.
Inputs are the last 10 noisy values, the target the next noisy value; the split is chronological (70/15/15).
Since the noise is unpredictable, RMSE = sigma is the floor; the bar is 1.2 x sigma. (A least-squares linear
forecaster on the same 10 values only reaches ~1.6 x sigma: the LSTM has to recognise where in the season the
window sits, which is what makes the task non-trivial.)

Seed changes: the seed trains on ``np.random.random`` inputs and targets (nothing to learn) and only builds the
model; here it forecasts the procedural series above. The layer is kept as in the seed (50 units,
``activation="relu"``, default recurrent activation, ``unroll=False``) with a fixed input length of 10.
Training: Adam (lr 3e-3) on MSE with the learning rate halved when the validation loss plateaus (a callback the
default ``fit`` does not add, hence the ``train_fn``).
"""
from models.backend import keras
from models.datasets.sequences import seasonal_windows
from models.metrics import RMSE
from models.registry import register
from models.spec import ModelSpec
from models.training import fit


def build(config: dict):
    return keras.Sequential([
        keras.layers.Input((config["window"], 1), name="series"),
        keras.layers.LSTM(config["units"], activation="relu"),
        keras.layers.Dense(1),
    ], name="lstm")


def load_data(config: dict, seed: int):
    return seasonal_windows(config["length"], config["window"], config["sigma"], seed)


def train(model, splits, config: dict, seed: int):
    plateau = keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=config["patience"], min_lr=1e-5)
    return fit(SPEC, model, splits, config, seed, callbacks=[plateau])


SIGMA = 0.2

SPEC = register(ModelSpec(
    name="lstm",
    seed_doc="001 §2.2 (LSTM time series), 002 §1.2",
    task="next-step forecast of a noisy multi-seasonal series (window 10)",
    build=build,
    load_data=load_data,
    metric=RMSE,
    quality_bar=1.2 * SIGMA,
    config={"units": 50, "window": 10, "sigma": SIGMA, "length": 8000, "epochs": 40, "batch_size": 64,
            "lr": 3e-3, "patience": 5},
    tiny={"units": 8, "length": 400, "epochs": 2},
    loss="mse",
    train_fn=train,
    preprocessing="raw series values (roughly in [-2, 2]); input = the last 10 values, shape (10, 1)",
    notes=__doc__,
))
