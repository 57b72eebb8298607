"""Models a user would bring, built and saved as files: not zoo models (the tests and the README use them).

    python examples/user_models.py DIR   # writes DIR/{keras3_cnn,tabular,custom,layer_norm_mlp_keras3}.keras, their
                                         # .npz data, user_layers.py
    python examples/user_models.py DIR --keras3-graphs   # the Keras 3 graphs below the bridge cannot rebuild

- ``keras3_cnn``: a Keras 3 (``import keras``) CNN on raw 0..255 pixels with a Rescaling layer and gelu/swish.
- ``tabular``: a tf_keras model on raw-scaled tabular features with an adapted Normalization layer.
- ``custom_layer``: a tf_keras model with the user's own layer (with weights), defined in ``CUSTOM_LAYER_CODE``.
- ``layer_norm_mlp``: Keras 3 or tf_keras; raw tabular features through Normalization, mish, LayerNormalization,
  selu and Dropout (its 16x8 TFLite file once aborted LiteRT; see export/rewrites.py).
- Keras 3 graphs the tf_keras bridge cannot rebuild (served as Keras 3 traces them): ``mobilenet_v3_small``,
  ``transformer_block`` (``a + b`` residuals), ``ops_graph`` (keras.ops between layers), ``keras3_custom_layer`` (a
  Keras 3 layer of the user's own, in ``KERAS3_LAYER_CODE``), ``bert_tiny`` (keras_hub's BertBackbone; needs keras-hub).
Each returns (model path, data path); data is an .npz with x and y (named inputs for bert_tiny).
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


# ------------------------------------------------- Keras 3 graphs the tf_keras bridge cannot rebuild (served as is)

KERAS3_LAYER_CODE = textwrap.dedent('''
    import keras

    @keras.saving.register_keras_serializable(package="user3")
    class GatedDense(keras.layers.Layer):
        """A Keras 3 dense layer with a learned sigmoid gate (the user's own Keras 3 layer)."""

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform")
            self.gate = self.add_weight(shape=(self.units,), initializer="zeros")

        def call(self, x):
            return keras.ops.matmul(x, self.kernel) * keras.ops.sigmoid(self.gate)

        def get_config(self):
            return {**super().get_config(), "units": self.units}
''')


def _random_images(n: int, size: int = 32, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 3)).astype("float32"), rng.integers(0, classes, n)


def mobilenet_v3_small(directory: Path, n: int = 64, epochs: int = 1) -> tuple[Path, Path]:
    """keras.applications.MobileNetV3Small (32x32, no weights): its hard_sigmoid writes keras.ops nodes."""
    import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says

    keras.utils.set_random_seed(0)
    x, y = _random_images(n)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10)
    return _fit_and_save(model, x, y, epochs, Path(directory) / "mobilenet_v3_small")


def ops_graph(directory: Path, n: int = 64, epochs: int = 1) -> tuple[Path, Path]:
    """A functional graph with ``+``, ``*``, ``keras.ops.mean`` and a ``keras.ops.reshape`` between layers."""
    import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says

    keras.utils.set_random_seed(0)
    x, y = _random_images(n)
    inputs = keras.Input((32, 32, 3), name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    b = keras.layers.Conv2D(8, 1)(inputs)
    h = (a + b) * keras.layers.Activation("sigmoid")(b)
    h = keras.ops.mean(h, axis=(1, 2))
    h = keras.ops.reshape(h, (-1, 2, 4))
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    return _fit_and_save(keras.Model(inputs, outputs), x, y, epochs, Path(directory) / "ops_graph")


def transformer_block(directory: Path, n: int = 64, epochs: int = 1, length: int = 16, dim: int = 32,
                      ) -> tuple[Path, Path]:
    """A small transformer encoder block whose residuals are ``a + b`` between layers."""
    import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, length, dim)).astype("float32"), rng.integers(0, 4, n)
    inputs = keras.Input((length, dim), name="tokens")
    h = keras.layers.LayerNormalization()(inputs)
    h = inputs + keras.layers.MultiHeadAttention(num_heads=2, key_dim=dim // 2)(h, h)
    f = keras.layers.Dense(dim * 2, activation="gelu")(keras.layers.LayerNormalization()(h))
    h = h + keras.layers.Dense(dim)(f)
    h = keras.layers.GlobalAveragePooling1D()(h)
    outputs = keras.layers.Dense(4, activation="softmax")(h)
    return _fit_and_save(keras.Model(inputs, outputs), x, y, epochs, Path(directory) / "transformer_block")


def keras3_custom_layer(directory: Path, n: int = 64, epochs: int = 1) -> tuple[Path, Path, Path]:
    """(model path, data path, the .py file defining its Keras 3 layer): a layer of the user's own, in Keras 3."""
    from models.loading import import_custom_objects

    import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says

    code = Path(directory) / "user_layers_keras3.py"
    code.write_text(KERAS3_LAYER_CODE)
    namespace = import_custom_objects(str(code))  # as --custom-objects does: the same module in this process
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, 6)).astype("float32"), rng.integers(0, 2, n)
    inputs = keras.Input((6,))
    h = namespace["GatedDense"](8, name="gated_dense")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    return (*_fit_and_save(keras.Model(inputs, outputs), x, y, epochs, Path(directory) / "keras3_custom"), code)


def bert_tiny(directory: Path, n: int = 64, epochs: int = 1, length: int = 16) -> tuple[Path, Path]:
    """keras_hub's BertBackbone at its smallest with a Dense head (needs keras-hub): a subclassed Keras 3 model."""
    import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=1, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=length)
    names = ("token_ids", "segment_ids", "padding_mask")
    inputs = {name: keras.Input((length,), dtype="int32", name=name) for name in names}
    outputs = keras.layers.Dense(2, activation="softmax")(backbone(inputs)["pooled_output"])
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 100, (n, length)).astype("int32")
    x = {"token_ids": tokens, "segment_ids": np.zeros_like(tokens), "padding_mask": np.ones_like(tokens)}
    y = (tokens[:, 0] > 50).astype("int64")
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    path, data = Path(directory) / "bert_tiny.keras", Path(directory) / "bert_tiny.npz"
    model.save(path)
    np.savez(data, y=y, **x)
    return path, data


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = Path(args[0] if args else "demo")
    out.mkdir(parents=True, exist_ok=True)
    if "--keras3-graphs" in sys.argv:  # Keras 3 graphs the tf_keras bridge cannot rebuild
        makers = [mobilenet_v3_small, transformer_block, ops_graph, keras3_custom_layer, bert_tiny]
    else:
        makers = [keras3_cnn, tabular, custom_layer, layer_norm_mlp]
    for make in makers:
        print(" ".join(str(p) for p in make(out)))
