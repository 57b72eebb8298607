"""Magnitude pruning of Keras 3 models without tfmot (compress.techniques.magnitude): graphs with keras.ops between
layers, a keras.applications backbone nested in the user's model, attention, the user's own layers. Models are
built here, as their authors write them."""
from dataclasses import dataclass

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from compress.techniques import magnitude
from compress.techniques.pruning import is_m_by_n


@dataclass
class Data:
    x: np.ndarray
    y: np.ndarray


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.images / 16.0).astype("float32").reshape(-1, 64)
    return Data(x[:1200], d.target[:1200]), Data(x[1200:], d.target[1200:])


def ops_graph():
    """A functional graph with `a + b`, `*`, keras.ops.mean and a reshape between layers (no Add/Multiply layers)."""
    inp = keras.Input((64,))
    a = keras.layers.Dense(64, activation="relu")(inp)
    b = keras.layers.Dense(64, activation="relu")(a)
    h = a + b * 0.5
    h = keras.ops.reshape(h, (-1, 8, 8))
    h = h - keras.ops.mean(h, axis=-1, keepdims=True)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model(inp, out)


def _trained(model, train, epochs=8):
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train.x, train.y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _accuracy(model, data):
    return float((np.argmax(model.predict(data.x, verbose=0), -1) == data.y).mean())


def test_ops_graph_pruned_to_half_keeps_accuracy_and_reloads_as_keras3(digits, tmp_path):
    train, test = digits
    model = _trained(ops_graph(), train)
    before = _accuracy(model, test)
    given = [w.copy() for w in model.get_weights()]
    pruned, outcome = magnitude.prune(model, train, sparsity=0.5, epochs=2, lr=1e-3)
    assert pruned is not model  # the model given is left as it was: the gate compares the result with it
    for a, b in zip(given, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert outcome.ran and len(outcome.applied) == 3
    assert outcome.details["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    after = _accuracy(pruned, test)
    assert before > 0.9 and after >= before - 0.02, (before, after)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    back = keras.saving.load_model(path)
    kernels = [layer.kernel.numpy() for layer in back.layers if isinstance(layer, keras.layers.Dense)]
    assert sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels) == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(back.predict(test.x[:8], verbose=0), pruned.predict(test.x[:8], verbose=0), atol=1e-6)


def test_a_nested_applications_backbone_is_pruned_inside():
    """The transfer-learning shape: a keras.applications model as one layer of the user's model."""
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, include_top=False)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0), backbone,
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    pruned, outcome = magnitude.prune(model, None, sparsity=0.5)
    inner = [name for name in outcome.applied if name.startswith(backbone.name + "/")]
    assert len(inner) > 30  # the backbone's convolutions, not the backbone as one opaque layer
    assert f"{backbone.name}/Conv1" in outcome.applied and "dense" in outcome.applied[-1]
    assert any("BatchNormalization has only a scale" in why for why in outcome.skipped.values())
    assert outcome.details["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert outcome.details["schedule"] == "constant (one-shot)"


def _attention_model():
    inp = keras.Input((8, 8))
    h = keras.layers.Dense(16)(inp)
    h = h + keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    h = keras.layers.LayerNormalization()(h)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_attention_projections_are_pruned(digits):
    train, _ = digits
    data = Data(train.x.reshape(-1, 8, 8)[:256], train.y[:256])
    pruned, outcome = magnitude.prune(_attention_model(), data, sparsity=0.5, epochs=1)
    mha = [name for name in outcome.applied if "multi_head_attention" in name]
    assert len(mha) == 4  # the query, key, value and output projections (EinsumDense sublayers)
    assert "LayerNormalization has only a scale and an offset" in outcome.skipped.values()


def test_2_by_4_where_the_kernel_allows_and_the_reason_where_not():
    pruned, outcome = magnitude.prune(_attention_model(), None, m_by_n=(2, 4))
    dense = [layer for layer in pruned.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.name for layer in dense] == [n for n in outcome.applied]
    assert all(is_m_by_n(layer.kernel.numpy(), (2, 4)) for layer in dense)
    mha = {name: why for name, why in outcome.skipped.items() if "multi_head_attention" in name}
    assert len(mha) == 4 and all("rank-2 (Dense) or rank-4 (Conv2D)" in why for why in mha.values())


@keras.saving.register_keras_serializable(package="test_keras3_pruning")
class Scale(keras.layers.Layer):
    """A user's layer with a weight whose role the toolkit cannot know."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


@keras.saving.register_keras_serializable(package="test_keras3_pruning")
class MyDense(keras.layers.Layer):
    """A user's layer that names its prunable weights, as tfmot's PrunableLayer protocol asks."""

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], 32), initializer="glorot_uniform")

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)

    def get_prunable_weights(self):
        return [self.kernel]


def test_users_layers_are_pruned_when_they_say_how_else_skipped_with_the_reason():
    inp = keras.Input((64,))
    h = MyDense()(Scale()(inp))
    model = keras.Model(inp, keras.layers.Dense(10)(h))
    pruned, outcome = magnitude.prune(model, None, sparsity=0.5)
    names = {type(layer).__name__: layer.name for layer in model.layers}
    assert names["MyDense"] in outcome.applied
    assert "no pruning rule for Scale" in outcome.skipped[names["Scale"]]
    assert "get_prunable_weights()" in outcome.skipped[names["Scale"]]
    kernel = pruned.get_layer(names["MyDense"]).kernel.numpy()
    assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.01)


def test_same_inputs_same_pruned_weights(digits):
    """With the same model, data and seed, the result is the same to the bit."""
    train, _ = digits
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        model = _trained(ops_graph(), train, epochs=1)
        pruned, _ = magnitude.prune(model, train, sparsity=0.5, epochs=1, seed=3)
        weights.append([w.copy() for w in pruned.get_weights()])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
