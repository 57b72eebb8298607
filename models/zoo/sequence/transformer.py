"""transformer: the seeds' Transformer encoder block (001 §3.1, 002 §3) with a pooled classifier head.

Architecture (seed 001): tokens -> Embedding(5000, 64) (+ learned position embedding) ->
MultiHeadAttention(4 heads, key_dim 64) -> Dropout -> LayerNorm(x + attention) -> Dense(128, relu) ->
Dense(64) -> Dropout -> LayerNorm(+ residual) -> GlobalAveragePooling1D -> Dense(classes, softmax).

Task: which keyword set comes FIRST in a 32-token sequence (``models.datasets.text.
first_keyword_sequences``): 4 sets of 8 keyword ids among noise ids, 2-3 sets present, the first one
1-2 times and the others 1-3 times, so counting (bag of words) is not enough (a logistic regression
on keyword-set counts scores ~0.25 = chance): the model has to use order, which is what the position
embedding and attention provide. Noise words use only ids 33-299 of the 5000-word embedding: with
noise spread over all 5000 ids the model memorised the training set through rare noise words
(train 1.0, val 0.29) instead of learning the rule; the unused rows stay in the seed's vocabulary.

Seed changes: seed 001 builds only the encoder (Input shape (None,), no position information, no
head, no task); seed 002 imports ``tensorflow.keras.layers.Transformer``, which does not exist. Here:
a static sequence length (exporters need static shapes), a learned position embedding added by the
small serializable layer :class:`PositionEmbedding` (no Lambda; without it attention is
permutation-invariant and the order rule cannot be learned), and a mean-pooled softmax head. Layer
types and sizes otherwise follow seed 001.
"""
from __future__ import annotations

from models.backend import keras, tf
from models.datasets import split_arrays
from models.datasets.text import first_keyword_sequences
from models.metrics import ACCURACY
from models.registry import register
from models.spec import ModelSpec


@keras.saving.register_keras_serializable(package="ct")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned (sequence_length, dim) position embedding to a (batch, sequence_length, dim) input."""

    def __init__(self, sequence_length: int, initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            name="position_embeddings", shape=(self.sequence_length, int(input_shape[-1])),
            initializer=self.initializer, trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        return inputs + tf.cast(self.position_embeddings, inputs.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(sequence_length=self.sequence_length,
                      initializer=keras.initializers.serialize(self.initializer))
        return config


def encoder_block(x, num_heads: int, key_dim: int, ff_dim: int, dropout: float, name: str):
    """Seed 001's block: self-attention + residual + LayerNorm, FFN + residual + LayerNorm."""
    dim = x.shape[-1]
    att = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, name=f"{name}_mha")(x, x)
    att = keras.layers.Dropout(dropout)(att)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(keras.layers.Add()([x, att]))
    ffn = keras.layers.Dense(ff_dim, activation="relu", name=f"{name}_ffn1")(x)
    ffn = keras.layers.Dense(dim, name=f"{name}_ffn2")(ffn)
    ffn = keras.layers.Dropout(dropout)(ffn)
    return keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(keras.layers.Add()([x, ffn]))


def build(config: dict):
    tokens = keras.Input((config["seq_len"],), dtype="int32", name="tokens")
    x = keras.layers.Embedding(config["vocab_size"], config["dim"], name="token_embedding")(tokens)
    x = PositionEmbedding(config["seq_len"], name="position_embedding")(x)
    for i in range(config["layers"]):
        x = encoder_block(x, config["heads"], config["key_dim"], config["ff_dim"], config["dropout"], f"enc{i}")
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(config["classes"], activation="softmax", name="classifier")(x)
    return keras.Model(tokens, out, name="transformer")


def load_data(config: dict, seed: int):
    x, y = first_keyword_sequences(config["samples"], config["seq_len"], config["vocab_size"],
                                   config["classes"], config["keywords_per_class"], seed=seed,
                                   noise_vocab=config.get("noise_vocab"))
    return split_arrays(x, y, seed)


register(ModelSpec(
    name="transformer",
    seed_doc="001 §3.1 (Transformer encoder), 002 §3",
    task="token-sequence classification: which keyword set occurs first (4 classes)",
    build=build,
    load_data=load_data,
    metric=ACCURACY,
    quality_bar=0.90,
    config={"vocab_size": 5000, "dim": 64, "seq_len": 32, "heads": 4, "key_dim": 64, "ff_dim": 128,
            "layers": 1, "dropout": 0.1, "classes": 4, "keywords_per_class": 8, "noise_vocab": 300,
            "samples": 10000, "epochs": 8, "batch_size": 128, "lr": 2e-3},
    tiny={"vocab_size": 200, "noise_vocab": 200, "dim": 16, "seq_len": 16, "key_dim": 8, "ff_dim": 32,
          "samples": 300, "epochs": 1},
    labels=("set0", "set1", "set2", "set3"),
    preprocessing="int32 token ids, fixed length; ids 1-32 are the keyword sets, the rest noise",
    notes=__doc__,
))
