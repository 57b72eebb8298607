"""transformer_seq2seq: the seed's Transformer "machine translation" model (001 §4.2), fixed.

Architecture: source_tokens -> Embedding + learned position embedding -> ``layers`` encoder blocks
(self-attention, FFN, residuals, LayerNorm; the seed's ``transformer_encoder``).
target_tokens (decoder input: START + target shifted right) -> Embedding + position embedding ->
``layers`` decoder blocks, each: causal self-attention (``MultiHeadAttention(use_causal_mask=True)``)
-> cross-attention over the encoder output -> FFN, every sub-layer with residual + LayerNorm ->
Dense(target_vocab, softmax): per-position next-token probabilities.

Task (``models.datasets.text.reversal_translation``): the target sentence is the source reversed
with every word mapped through one of two fixed vocabulary permutations, picked by the parity of its
neighbour, so output position i needs source positions L-1-i and L-i: it can only be solved through
the encoder (cross-attention), not from the previous target words. Metric: token accuracy over all target
positions with teacher forcing. :func:`greedy_decode` translates autoregressively (outside the graph)
with any predict function.

Seed changes: (1) the seed's "decoder" is two copies of the encoder block applied to the target
embedding, so it never sees the encoder output (the encoder is dead code) and, without a causal
mask, it can read the very token it has to predict; the decoder now has causal self-attention and
cross-attention to the encoder. (2) The seed has no position information (attention is
permutation-invariant, so reversal is impossible); a learned position embedding is added by the
serializable layer ``PositionEmbedding`` from ``models.zoo.sequence.transformer`` (no Lambda). (3) Inputs are
named, int32 and of static length (exporters need static shapes). (4) Sizes scaled down from the
seed's vocab 10000 / dim 256 / ff 512 / length 50 to vocab 64 / dim 64 / ff 128 / length 12 so the
model trains in about a minute on 2 CPU cores; 2 encoder + 2 decoder layers, 4 heads and
key_dim = dim (the seed's head_size = embedding_dim) as in the seed. The seed's data
(English-Chinese pairs) is replaced by the procedural task above.
"""
from __future__ import annotations

import numpy as np

from models.backend import keras
from models.datasets.text import START, reversal_translation
from models.registry import register
from models.spec import Metric, ModelSpec, Split, Splits
from models.zoo.sequence.transformer import PositionEmbedding, encoder_block


def decoder_block(x, enc, num_heads: int, key_dim: int, ff_dim: int, dropout: float, name: str):
    dim = x.shape[-1]
    att = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, name=f"{name}_self_mha")(
        x, x, use_causal_mask=True)
    att = keras.layers.Dropout(dropout)(att)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(keras.layers.Add()([x, att]))
    cross = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, name=f"{name}_cross_mha")(
        x, enc)
    cross = keras.layers.Dropout(dropout)(cross)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(keras.layers.Add()([x, cross]))
    ffn = keras.layers.Dense(ff_dim, activation="relu", name=f"{name}_ffn1")(x)
    ffn = keras.layers.Dense(dim, name=f"{name}_ffn2")(ffn)
    ffn = keras.layers.Dropout(dropout)(ffn)
    return keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln3")(keras.layers.Add()([x, ffn]))


def build(config: dict):
    length, dim = config["seq_len"], config["dim"]
    heads, key_dim, ff, drop = config["heads"], config["key_dim"], config["ff_dim"], config["dropout"]
    src = keras.Input((length,), dtype="int32", name="source_tokens")
    tgt = keras.Input((length,), dtype="int32", name="target_tokens")
    enc = keras.layers.Embedding(config["vocab_size"], dim, name="source_embedding")(src)
    enc = PositionEmbedding(length, name="source_positions")(enc)
    for i in range(config["layers"]):
        enc = encoder_block(enc, heads, key_dim, ff, drop, f"enc{i}")
    dec = keras.layers.Embedding(config["vocab_size"], dim, name="target_embedding")(tgt)
    dec = PositionEmbedding(length, name="target_positions")(dec)
    for i in range(config["layers"]):
        dec = decoder_block(dec, enc, heads, key_dim, ff, drop, f"dec{i}")
    out = keras.layers.Dense(config["vocab_size"], activation="softmax", name="next_token")(dec)
    return keras.Model([src, tgt], out, name="transformer_seq2seq")


def load_data(config: dict, seed: int) -> Splits:
    n = config["samples"]
    src, dec_in, tgt = reversal_translation(n, config["seq_len"], config["vocab_size"], seed=seed)
    n_val = n_test = max(1, n // 10)

    def part(sl):
        return Split({"source_tokens": src[sl], "target_tokens": dec_in[sl]}, tgt[sl])

    return Splits(part(slice(n_val + n_test, n)), part(slice(0, n_val)), part(slice(n_val, n_val + n_test)))


def token_accuracy(y_true, y_pred) -> float:
    """Share of target positions whose most probable token is the reference token (teacher forcing)."""
    y_true = np.asarray(y_true)
    return float(np.mean(np.asarray(y_pred).reshape(y_true.shape + (-1,)).argmax(-1) == y_true))


TOKEN_ACCURACY = Metric("token_accuracy", token_accuracy)


def greedy_decode(predict, source_tokens: np.ndarray, start_token: int = START) -> np.ndarray:
    """Autoregressive greedy translation with any predict function (Keras, TFLite, ONNX...).

    The decoder input has the model's static length: positions not yet generated hold 0, which the
    causal mask keeps from influencing earlier positions. One predict call per output position.
    """
    src = np.asarray(source_tokens, "int32")
    n, length = src.shape
    dec = np.zeros((n, length), "int32")
    dec[:, 0] = start_token
    out = np.zeros((n, length), "int32")
    for i in range(length):
        probs = np.asarray(predict({"source_tokens": src, "target_tokens": dec}))
        out[:, i] = probs[:, i].argmax(-1)
        if i + 1 < length:
            dec[:, i + 1] = out[:, i]
    return out


register(ModelSpec(
    name="transformer_seq2seq",
    seed_doc="001 §4.2 (Transformer machine translation)",
    task="synthetic translation: reverse the source and map each word (encoder-decoder, teacher forcing)",
    build=build,
    load_data=load_data,
    metric=TOKEN_ACCURACY,
    quality_bar=0.90,
    config={"vocab_size": 64, "seq_len": 12, "dim": 64, "heads": 4, "key_dim": 64, "ff_dim": 128, "layers": 2,
            "dropout": 0.1, "samples": 8000, "epochs": 4, "batch_size": 64, "lr": 2e-3},
    tiny={"dim": 16, "key_dim": 16, "ff_dim": 32, "layers": 1, "samples": 300, "epochs": 1, "vocab_size": 16,
          "seq_len": 6},
    preprocessing=f"int32 word ids; 0 = padding, {START} = start token, words are ids >= 2; "
                  "target_tokens = start token + reference target shifted right",
    notes=__doc__,
))
