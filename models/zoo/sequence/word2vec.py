"""word2vec: skip-gram with negative sampling (seed 000 §5, Word2Vec).

Deployed model: the target-embedding lookup, Input "token_ids" (int32, shape (1,)) -> the word's
vector (``dim`` floats). Training (``train_fn``) wraps the SAME Embedding layer in a skip-gram
model: target embedding . context embedding (a second, separate Embedding) for the true context word
and ``negatives`` words drawn from the unigram^0.75 distribution, sigmoid, binary cross-entropy.

Task: a corpus generated from a small grammar (``models.datasets.text.SynonymGrammar``) in which
every concept is written with ``synonyms`` interchangeable words (full config: 3 parts of speech x
24 concepts x 4 synonyms + 6 function words = 294 words, 12000 sentences); the words of one concept share
their context distribution and never co-occur. Metric: synonym recall@5 = for every content word,
the share of its synonyms among its 5 cosine nearest neighbours (over the whole vocabulary,
function words included), averaged. It is computed from ``predict(all ids)`` alone.

Seed changes: the seed calls gensim's Word2Vec on six tokenised Chinese sentences (and downloads
nltk's punkt); neither gensim nor a download is available, six sentences cannot show anything, and a
gensim object cannot be compressed or exported. The model is rebuilt as Keras layers (the seed's
skip-gram/negative-sampling objective; vector_size 100 -> 64, window 5 -> 2 because the synthetic
sentences are 8 words long) and trained on the procedural corpus. Splits: train/val = (target id,
context id) pairs from disjoint sentences; test = every id with its synonym group as label.
"""
from __future__ import annotations

import numpy as np

from models.backend import keras
from models.datasets.text import synonym_corpus
from models.datasets.text import FUNCTION_WORDS
from models.registry import register
from models.spec import Metric, ModelSpec


def build(config: dict):
    ids = keras.Input((1,), dtype="int32", name="token_ids")
    emb = keras.layers.Embedding(config["vocab_size"], config["dim"], name="target_embedding")(ids)
    vec = keras.layers.Flatten(name="vector")(emb)
    return keras.Model(ids, vec, name="word2vec")


def _config_vocab(config: dict) -> int:
    return len(FUNCTION_WORDS) + 3 * config["concepts_per_part"] * config["synonyms"]


def load_data(config: dict, seed: int):
    splits, grammar = synonym_corpus(config["concepts_per_part"], config["synonyms"], config["sentences"],
                                     config["window"], seed)
    assert grammar.vocab_size == config["vocab_size"], (grammar.vocab_size, config["vocab_size"])
    return splits


def training_model(lookup, vocab_size: int, dim: int, negatives: int):
    """Skip-gram with negative sampling around the lookup model's own target Embedding."""
    target_in = keras.Input((1,), dtype="int32", name="target")
    context_in = keras.Input((1 + negatives,), dtype="int32", name="contexts")  # true context first
    t = lookup.get_layer("target_embedding")(target_in)                               # (b, 1, d)
    c = keras.layers.Embedding(vocab_size, dim, name="context_embedding")(context_in)  # (b, 1+k, d)
    logits = keras.layers.Flatten()(keras.layers.Dot(axes=-1)([t, c]))                 # (b, 1+k)
    probs = keras.layers.Activation("sigmoid")(logits)
    return keras.Model([target_in, context_in], probs, name="skipgram_ns")


def train_fn(model, splits, config, seed):
    vocab, k = config["vocab_size"], config["negatives"]
    sgns = training_model(model, vocab, config["dim"], k)
    sgns.compile(keras.optimizers.Adam(config["lr"]), loss="binary_crossentropy")
    targets, contexts = splits.train.x, splits.train.y
    freq = np.bincount(contexts, minlength=vocab).astype("float64") ** 0.75
    noise = freq / freq.sum()
    rng = np.random.default_rng(seed)
    labels = np.zeros((len(targets), 1 + k), "float32")
    labels[:, 0] = 1.0
    for _ in range(config["epochs"]):  # fresh negatives every epoch
        negs = rng.choice(vocab, size=(len(targets), k), p=noise).astype("int32")
        ctx = np.concatenate([contexts[:, None], negs], axis=1)
        sgns.fit([targets, ctx], labels, batch_size=config["batch_size"], epochs=1, shuffle=True, verbose=0)
    return model


def synonym_recall(vectors: np.ndarray, groups: np.ndarray, k: int = 5) -> float:
    """Mean over content words of |synonyms among the k cosine nearest neighbours| / min(k, #synonyms)."""
    v = np.asarray(vectors, "float64").reshape(len(groups), -1)
    v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    recalls = []
    for i, g in enumerate(groups):
        if g < 0:
            continue
        n_syn = int(np.sum(groups == g)) - 1
        recalls.append(np.sum(groups[top[i]] == g) / min(k, n_syn))
    return float(np.mean(recalls))


def score_fn(predict, split, config) -> float:
    return synonym_recall(predict(split.x), np.asarray(split.y), k=5)


RECALL_AT_5 = Metric("synonym_recall@5", lambda groups, vectors: synonym_recall(vectors, np.asarray(groups)))

_FULL = {"concepts_per_part": 24, "synonyms": 4, "sentences": 12000, "window": 2, "dim": 64, "negatives": 5,
         "epochs": 3, "batch_size": 512, "lr": 5e-3}
_FULL["vocab_size"] = _config_vocab(_FULL)
_TINY = {"concepts_per_part": 4, "synonyms": 3, "sentences": 300, "dim": 8, "epochs": 1}
_TINY["vocab_size"] = _config_vocab({**_FULL, **_TINY})

register(ModelSpec(
    name="word2vec",
    seed_doc="000 §5 (Word2Vec)",
    task="word embeddings (skip-gram, negative sampling) on a grammar corpus with planted synonyms",
    build=build,
    load_data=load_data,
    metric=RECALL_AT_5,
    quality_bar=0.80,
    config=_FULL,
    tiny=_TINY,
    loss="binary_crossentropy",
    train_fn=train_fn,
    score_fn=score_fn,
    preprocessing="input: word ids (int32, shape (1,)) of the generated vocabulary; output: target vector",
    notes=__doc__,
))

__all__ = ["build", "load_data", "training_model", "train_fn", "synonym_recall", "score_fn"]
