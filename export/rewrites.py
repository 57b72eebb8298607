"""Graph rewrites that keep the math and change the form: a fixed batch axis, unrolled recurrent layers,
layer normalization from its moments.

Shared by export (converters that need them) and compress (QAT of recurrent models for TFLite)."""
from __future__ import annotations

import re

from models.backend import keras, tf

RNN_TYPES = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)


def with_static_batch(model, batch: int):
    """A copy of ``model`` whose inputs have batch size ``batch`` (same names, same weights)."""
    return _with_inputs(model, batch, [t.name.split(":")[0] for t in model.inputs])


def _with_inputs(model, batch, names):
    inputs = [keras.Input(batch_shape=(batch,) + tuple(t.shape[1:]), dtype=t.dtype, name=name)
              for t, name in zip(model.inputs, names)]
    clone = keras.models.clone_model(model, input_tensors=inputs if len(inputs) > 1 else inputs[0])
    clone.set_weights(model.get_weights())
    return clone


#: what TensorFlow accepts as a SavedModel signature's input name (TFLite signatures come from it)
_SIGNATURE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-/]*")


def _input_layer_names(model) -> list[str]:
    return list(getattr(model, "input_names", None) or [t.name for t in model.inputs])


def unsignable_input_names(model) -> list[str]:
    """The model's input names that a TFLite signature cannot carry (a space, a ':')."""
    return [n for n in _input_layer_names(model) if not _SIGNATURE_NAME.fullmatch(n)]


def signable_inputs(model):
    """A copy whose inputs are named so that a SavedModel/TFLite signature can carry them, same weights."""
    fixed = [n if _SIGNATURE_NAME.fullmatch(n) else re.sub(r"[^A-Za-z0-9_.\-/]", "_", n).lstrip("_-/") or "input"
             for n in _input_layer_names(model)]
    return _with_inputs(model, None, fixed)


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


class MomentsGroupNormalization(keras.layers.GroupNormalization):
    """GroupNormalization over static group shapes, with the same weights.

    tf_keras' form builds a mask with ones_like/broadcast_to on the dynamic shape; TFLite's int8 calibration
    fails on that BROADCAST_TO ("Output shape must be broadcastable from input shape").
    """

    def call(self, inputs, mask=None):
        rank = inputs.shape.rank
        axis = self.axis % rank
        dims = [-1] + [int(d) for d in inputs.shape[1:]]
        grouped = dims[:axis] + [self.groups, dims[axis] // self.groups] + dims[axis + 1:]
        x = tf.reshape(inputs, grouped)
        axes = [i for i in range(1, rank + 1) if i != axis]
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        centred = x - mean
        variance = tf.reduce_mean(centred * centred, axis=axes, keepdims=True)
        outputs = tf.reshape(centred * tf.math.rsqrt(variance + self.epsilon), dims)
        shape = [1] * rank
        shape[axis] = dims[axis]
        if self.scale:
            outputs = outputs * tf.reshape(self.gamma, shape)
        if self.center:
            outputs = outputs + tf.reshape(self.beta, shape)
        return outputs


#: layers that a quantized TFLite file needs in another form: {tf_keras class: (rewritten class, quantized modes)}
MOMENTS_FORMS = {keras.layers.LayerNormalization: (MomentsLayerNormalization, ("16x8",)),
                 keras.layers.GroupNormalization: (MomentsGroupNormalization, ("int8", "16x8"))}


def _needs_moments_form(layer, mode: str) -> bool:
    """A layer ``mode`` needs in its moments form; MomentsLayerNormalization takes the last axis only (the
    default, and what its unreshaped gamma/beta broadcast over)."""
    form = MOMENTS_FORMS.get(type(layer))
    if form is None or mode not in form[1]:
        return False
    return form[0] is not MomentsLayerNormalization or list(layer.axis) in ([-1], [len(layer.input_shape) - 1])


def moments_forms_needed(model, mode: str) -> list[str]:
    """Names of the normalization layer classes in ``model`` that ``mode`` needs in their moments form."""
    return sorted({type(layer).__name__ for layer in model.layers if _needs_moments_form(layer, mode)})


def moments_forms(model, mode: str):
    """A copy with every (top-level) normalization layer that ``mode`` needs computed from its moments."""

    def clone(layer):
        if _needs_moments_form(layer, mode):
            return MOMENTS_FORMS[type(layer)][0].from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
