"""Models a user would bring, built and saved as files: not zoo models (the tests and the README use them).

    python examples/user_models.py DIR   # writes DIR/{keras3_cnn,tabular,custom,layer_norm_mlp_keras3}.keras, their
                                         # .npz data, user_layers.py

- ``keras3_cnn``: a Keras 3 (``import keras``) CNN on raw 0..255 pixels with a Rescaling layer and gelu/swish.
- ``tabular``: a tf_keras model on raw-scaled tabular features with an adapted Normalization layer.
- ``custom_layer``: a tf_keras model with the user's own layer (with weights), defined in ``CUSTOM_LAYER_CODE``.
- ``layer_norm_mlp``: Keras 3 or tf_keras; raw tabular features through Normalization, mish, LayerNormalization,
  selu and Dropout (its 16x8 TFLite file once aborted LiteRT; see export/rewrites.py).
Each returns (model path, data path); data is an .npz with x and y.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

CUSTOM_LAYER_CODE = textwrap.dedent('''
    import tf_keras as keras

    @keras.saving.register_keras_serializable(package="user")
    class ScaledDense(keras.layers.Layer):
        """A dense layer with a learned per-unit output scale (the user's own layer)."""

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            self.kernel = self.add_weight("kernel", (input_shape[-1], self.units), initializer="glorot_uniform")
            self.scale = self.add_weight("scale", (self.units,), initializer="ones")

        def call(self, x):
            return keras.activations.tanh(x @ self.kernel) * self.scale

        def get_config(self):
            return {**super().get_config(), "units": self.units}
''')


def _images(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 150, (n, 16, 16, 1)).astype("float32")
    for cls, (r, c) in enumerate([(2, 2), (2, 9), (9, 5)]):  # a bright 5x5 patch whose place is the class
        x[y == cls, r:r + 5, c:c + 5] += 100 + rng.integers(0, 5)
    return x, y


def _fit_and_save(model, x, y, epochs: int, stem: Path) -> tuple[Path, Path]:
    """Train as a user would (Adam, the model's own loss and accuracy metric), save it and its data beside it."""
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    path, data = stem.with_suffix(".keras"), stem.with_suffix(".npz")
    model.save(path)
    np.savez(data, x=x, y=y)
    return path, data


def keras3_cnn(directory: Path, n: int = 900, epochs: int = 12) -> tuple[Path, Path]:
    import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says

    keras.utils.set_random_seed(0)
    x, y = _images(n, 0)
    model = keras.Sequential([
        keras.Input((16, 16, 1)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, activation="gelu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(16, activation="swish"), keras.layers.Dense(3, activation="softmax")])
    return _fit_and_save(model, x, y, epochs, Path(directory) / "keras3_cnn")


def _tabular_data(n: int, seed: int):
    """Raw-scaled features (incomes in the 10^4s, ages, ratios) whose class depends on a mix of them."""
    rng = np.random.default_rng(seed)
    x = np.stack([rng.normal(50_000, 15_000, n), rng.normal(40, 12, n), rng.random(n),
                  rng.normal(3_000, 900, n), rng.normal(0, 1, n), rng.normal(200, 50, n)], 1).astype("float32")
    score = (x[:, 0] - 50_000) / 15_000 + (x[:, 1] - 40) / 12 - 2 * (x[:, 2] - 0.5) + (x[:, 3] - 3000) / 900
    y = (score + 0.3 * rng.normal(size=n) > 0).astype("int64")
    return x, y


def tabular(directory: Path, n: int = 2000, epochs: int = 15) -> tuple[Path, Path]:
    from models.backend import keras

    keras.utils.set_random_seed(0)
    x, y = _tabular_data(n, 1)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    inputs = keras.Input((6,), name="features")
    h = keras.layers.Dense(32, activation="relu")(norm(inputs))
    h = keras.layers.Dense(16, activation="elu")(h)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    return _fit_and_save(model, x, y, epochs, Path(directory) / "tabular")


def custom_layer(directory: Path, n: int = 600, epochs: int = 10) -> tuple[Path, Path, Path]:
    """(model path, data path, the .py file that defines the layer)."""
    from models.backend import keras

    from models.loading import import_custom_objects

    code = Path(directory) / "user_layers.py"
    code.write_text(CUSTOM_LAYER_CODE)
    namespace = import_custom_objects(str(code))  # as --custom-objects does: the same module in this process
    keras.utils.set_random_seed(0)
    x, y = _tabular_data(n, 2)
    x = (x - x.mean(0)) / x.std(0)
    inputs = keras.Input((6,))
    h = namespace["ScaledDense"](12, name="scaled_dense")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    return (*_fit_and_save(model, x.astype("float32"), y, epochs, Path(directory) / "custom"), code)


def layer_norm_mlp(directory: Path, keras_flavour: str = "keras3", n: int = 2000,
                   epochs: int = 15) -> tuple[Path, Path]:
    if keras_flavour == "keras3":
        import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says
    else:
        from models.backend import keras

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = np.stack([rng.normal(50_000, 20_000, n), rng.uniform(0, 1, n), rng.normal(300, 50, n),
                  rng.integers(0, 7, n)], 1).astype("float32")
    y = ((x[:, 0] / 50_000 + 2 * x[:, 1] - (x[:, 2] - 300) / 100 + (x[:, 3] == 3)) > 1.6).astype("int64")
    norm = keras.layers.Normalization()
    norm.adapt(x)
    inputs = keras.Input((4,), name="features")
    h = keras.layers.Dense(48, activation="mish")(norm(inputs))
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.Dense(24, activation="selu")(h)
    h = keras.layers.Dropout(0.1)(h)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    return _fit_and_save(model, x, y, epochs, Path(directory) / f"layer_norm_mlp_{keras_flavour}")


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo")
    out.mkdir(parents=True, exist_ok=True)
    for made in (keras3_cnn(out), tabular(out), custom_layer(out), layer_norm_mlp(out)):
        print(" ".join(str(p) for p in made))
