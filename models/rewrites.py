"""Graph rewrites that keep the math and change the form: a fixed batch axis, unrolled recurrent layers,
layer normalization from its moments.

Shared by export (converters that need them) and compress (QAT of recurrent models for TFLite)."""
from __future__ import annotations

from models.backend import keras, tf

RNN_TYPES = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)


def with_static_batch(model, batch: int):
    """A copy of ``model`` whose inputs have batch size ``batch`` (same names, same weights)."""
    inputs = [keras.Input(batch_shape=(batch,) + tuple(t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0])
              for t in model.inputs]
    clone = keras.models.clone_model(model, input_tensors=inputs if len(inputs) > 1 else inputs[0])
    clone.set_weights(model.get_weights())
    return clone


def _is_rnn(layer) -> bool:
    """A recurrent layer, bare or inside a Bidirectional wrapper."""
    return isinstance(layer, RNN_TYPES) or (isinstance(layer, keras.layers.Bidirectional)
                                            and isinstance(layer.forward_layer, RNN_TYPES))


def has_rnn(model) -> bool:
    return any(_is_rnn(layer) for layer in model.layers)


def unrolled(model):
    """A copy with every LSTM/GRU/SimpleRNN unrolled over its (static) time axis, same weights.

    TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM kernel (LiteRT 2.3) drifts from Keras on trained LSTMs
    (max abs error ~1.0 on lstm_classifier's probabilities); the unrolled graph of plain ops matches to ~1e-7.
    A QuantizeWrapper also hides an RNN from the converter's fused path, and the rolled loop lowers to
    TensorList ops TFLite builtins cannot express; unrolled, a QAT model converts to plain int8-able ops.
    """

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, RNN_TYPES):
            config["unroll"] = True
        elif _is_rnn(layer):  # Bidirectional: both directions
            for key in ("layer", "backward_layer"):
                if isinstance(config.get(key), dict):
                    config[key]["config"]["unroll"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


class MomentsLayerNormalization(keras.layers.LayerNormalization):
    """LayerNormalization computed as (x - mean) * rsqrt(var + eps) * gamma + beta, with the same weights.

    tf_keras lowers LayerNormalization to a fused batch norm whose offset is a zeros constant; quantized
    16x8, LiteRT's int16 SUB of that constant fails a check in its Prepare and aborts the process
    (QuantizeMultiplierSmallerThanOneExp). This form has no such constant.
    """

    def call(self, inputs):
        mean = tf.reduce_mean(inputs, axis=self.axis, keepdims=True)
        centred = inputs - mean
        variance = tf.reduce_mean(centred * centred, axis=self.axis, keepdims=True)  # no int16 SQUARED_DIFFERENCE
        outputs = centred * tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            outputs = outputs * self.gamma
        if self.center:
            outputs = outputs + self.beta
        return outputs


def has_layer_norm(model) -> bool:
    return any(type(layer) is keras.layers.LayerNormalization for layer in model.layers)


def moments_layer_norms(model):
    """A copy with every (top-level) LayerNormalization computed from its moments, same weights."""

    def clone(layer):
        if type(layer) is keras.layers.LayerNormalization:
            return MomentsLayerNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
