"""QAT for the layers tfmot refuses that can take it after ``quantize_apply``: MultiHeadAttention and Embedding.

Embedding: annotated before ``quantize_apply``, tfmot puts a QuantizeLayer on its integer token input
(which fails); wrapped afterwards with a weights-only config, its table is fake-quantized like a kernel.

tfmot's QuantizeWrapper calls ``layer.call(inputs, training)``; attention is called as
``mha(query, value, key=None, attention_mask=None, use_causal_mask=...)``, so the wrapper here takes those
arguments. Its config fake-quantizes the four EinsumDense projection kernels (8-bit, symmetric, per
tensor, like tfmot's Dense kernels) and leaves the softmax and activations in float: the int8 TFLite
model then stores the projections as int8 weights (what TFLite's dynamic-range kernels deploy).
"""
from __future__ import annotations

from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
                                                                                       default_8bit_quantize_registry as q8)

from models.backend import keras, quiet_stderr

with quiet_stderr():
    from tensorflow_model_optimization.python.core.keras import utils as tfmot_utils
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_config import QuantizeConfig
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapperV2

PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


@keras.saving.register_keras_serializable(package="compress")
class MHAWeightsQuantizeConfig(QuantizeConfig):
    """8-bit per-tensor fake quantization of the query/key/value/output projection kernels only."""

    def __init__(self):
        self.weight_quantizer = quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True,
                                                              narrow_range=True)

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, p).kernel, self.weight_quantizer) for p in PROJECTIONS]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        for projection, weight in zip(PROJECTIONS, quantize_weights):
            getattr(layer, projection).kernel = weight

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="compress")
class MHAQuantizeWrapper(QuantizeWrapperV2):
    """QuantizeWrapperV2 with MultiHeadAttention's call signature."""

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False):
        if training is None:
            training = keras.backend.learning_phase()
        quantized = []
        for weight, quantizer, quantizer_vars in self._weight_vars:
            quantized.append(tfmot_utils.smart_cond(
                training,
                self._make_quantizer_fn(quantizer, weight, True, quantizer_vars),
                self._make_quantizer_fn(quantizer, weight, False, quantizer_vars)))
        self.quantize_config.set_quantize_weights(self.layer, quantized)
        return self.layer.call(query, value, key=key, attention_mask=attention_mask,
                               return_attention_scores=return_attention_scores, training=training,
                               use_causal_mask=use_causal_mask)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def wrap_after_apply(qmodel, names: set):
    """Clone a QAT model wrapping the named layers tfmot's quantize_apply cannot take (see module notes).

    MultiHeadAttention gets MHAQuantizeWrapper; Embedding a plain QuantizeWrapperV2 with a weights-only
    config (annotated before quantize_apply, tfmot would put a QuantizeLayer on its integer token input).
    """
    def fn(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if layer.name in names and isinstance(layer, keras.layers.MultiHeadAttention):
            return MHAQuantizeWrapper(layer, MHAWeightsQuantizeConfig())
        if layer.name in names and isinstance(layer, keras.layers.Embedding):
            return QuantizeWrapperV2(layer, q8.Default8BitQuantizeConfig(["embeddings"], [], False))
        return layer

    return keras.models.clone_model(qmodel, clone_function=fn)
