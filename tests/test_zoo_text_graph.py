"""Model-specific checks for word2vec, transformer, transformer_seq2seq and gnn (fast: tiny models)."""
import numpy as np
import pytest

import models
from models.backend import keras
from models.datasets.graph import karate_club, normalized_adjacency
from models.datasets.text import START, SynonymGrammar, first_keyword_sequences, reversal_translation
from models.training import keras_predict
from conftest import tiny_trained


# ----------------------------------------------------------------------------------------- word2vec

def test_synonym_recall_scores_planted_clusters():
    from models.zoo.sequence.word2vec import synonym_recall

    groups = np.array([-1, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    centres = np.eye(4)[[3, 0, 0, 0, 1, 1, 1, 2, 2, 2]]
    noisy = centres + 0.01 * np.random.default_rng(0).standard_normal(centres.shape)
    assert synonym_recall(noisy, groups, k=5) == 1.0
    shuffled = noisy[[0, 1, 4, 7, 2, 5, 8, 3, 6, 9]]  # every word now sits with other groups' words
    assert synonym_recall(shuffled, groups, k=2) == 0.0


def test_grammar_uses_every_word_in_fixed_slots():
    g = SynonymGrammar(concepts_per_part=4, synonyms=3, seed=0)
    sents = np.stack(g.sentences(300, np.random.default_rng(0)))
    groups = np.array(g.groups)
    assert (groups[sents[:, [0, 4, 6]]] == -1).all()       # function-word slots
    assert (groups[sents[:, [2, 5]]] // 4 == 0).all()       # noun slots (groups 0-3)
    assert (groups[sents[:, 3]] // 4 == 1).all()            # verb slot
    assert (groups[sents[:, [1, 7]]] // 4 == 2).all()       # adjective slots
    assert len(np.unique(sents)) == g.vocab_size            # every synonym of every concept occurs


def test_word2vec_lookup_shares_the_trained_embedding():
    from models.zoo.sequence import word2vec

    spec = models.get("word2vec")
    config = spec.resolve_config(tiny=True)
    model = spec.build(config)
    before = model.get_layer("target_embedding").get_weights()[0].copy()
    sgns = word2vec.training_model(model, config["vocab_size"], config["dim"], config["negatives"])
    assert sgns.get_layer("target_embedding") is model.get_layer("target_embedding")
    splits = spec.load_data(config, 0)
    word2vec.train_fn(model, splits, config, 0)
    assert not np.allclose(before, model.get_layer("target_embedding").get_weights()[0])
    vectors = model.predict(splits.test.x, verbose=0)
    assert vectors.shape == (config["vocab_size"], config["dim"])


# -------------------------------------------------------------------------------------- transformer

def test_first_keyword_labels_follow_the_order_rule():
    x, y = first_keyword_sequences(200, 32, 5000, 4, 8, seed=0, noise_vocab=300)
    for row, label in zip(x, y):
        kw = row[row <= 32]
        assert (kw[0] - 1) // 8 == label
        assert len(np.unique((kw - 1) // 8)) >= 2


def test_transformer_output_depends_on_token_order():
    trained = tiny_trained("transformer")
    model = trained.load()
    x = trained.splits().test.x[:4]
    assert not np.allclose(model.predict(x, verbose=0), model.predict(x[:, ::-1], verbose=0))


# ------------------------------------------------------------------------------ transformer_seq2seq

def test_reversal_translation_data():
    src, dec_in, tgt = reversal_translation(50, 8, 20, seed=0)
    assert (dec_in[:, 0] == START).all() and (dec_in[:, 1:] == tgt[:, :-1]).all()
    assert src.min() >= 2 and tgt.min() >= 2 and tgt.max() < 20
    # the same reversed source word maps to the same target word given the same neighbour parity
    rev = src[:, ::-1]
    parity = np.concatenate([np.zeros((50, 1), int), rev[:, :-1] % 2], axis=1)
    table = {}
    for key, out in zip(zip(parity.ravel(), rev.ravel()), tgt.ravel()):
        assert table.setdefault(key, out) == out


def test_seq2seq_decoder_is_causal_and_reads_the_encoder():
    trained = tiny_trained("transformer_seq2seq")
    model = trained.load()
    x = {k: v[:4].copy() for k, v in trained.splits().test.x.items()}
    base = model.predict(x, verbose=0)
    future = {k: v.copy() for k, v in x.items()}
    future["target_tokens"][:, 3:] = 0  # change only positions >= 3 of the decoder input
    changed = model.predict(future, verbose=0)
    np.testing.assert_allclose(changed[:, :3], base[:, :3], atol=1e-5)
    other_src = {**x, "source_tokens": x["source_tokens"][:, ::-1].copy()}
    assert not np.allclose(model.predict(other_src, verbose=0), base, atol=1e-4)


def test_greedy_decode_is_consistent_with_teacher_forcing():
    from models.zoo.sequence.transformer_seq2seq import greedy_decode

    trained = tiny_trained("transformer_seq2seq")
    predict = keras_predict(trained.load())
    src = trained.splits().test.x["source_tokens"][:5]
    out = greedy_decode(predict, src)
    assert out.shape == src.shape and out.dtype == np.int32
    dec_in = np.concatenate([np.full((5, 1), START, "int32"), out[:, :-1]], axis=1)
    forced = predict({"source_tokens": src, "target_tokens": dec_in}).argmax(-1)
    np.testing.assert_array_equal(forced, out)


# ----------------------------------------------------------------------------------------------- gnn

def test_karate_split_masks_partition_the_nodes():
    splits = karate_club(seed=0)
    masks = [s.y[0] >= 0 for s in (splits.train, splits.val, splits.test)]
    assert (sum(m.astype(int) for m in masks) == 1).all()
    assert all(len(set(s.y[0][s.y[0] >= 0])) == 2 for s in (splits.train, splits.val, splits.test))
    adj = splits.test.x["adjacency"][0]
    np.testing.assert_allclose(adj, adj.T)
    np.testing.assert_array_equal(splits.train.x["node_features"], splits.test.x["node_features"])
    assert np.allclose(normalized_adjacency(np.zeros((3, 3))), np.eye(3))


def test_graphconv_config_round_trip_and_keras_file(tmp_path):
    from models.zoo.structured.gnn import GraphConv

    layer = GraphConv(5, activation="relu", name="gc")
    clone = GraphConv.from_config(layer.get_config())
    assert clone.units == 5 and clone.activation is keras.activations.relu
    trained = tiny_trained("gnn")
    model = trained.load()
    assert isinstance(model.get_layer("gc1"), GraphConv)
    x = trained.splits().test.x
    path = tmp_path / "gnn.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert again.predict(x, verbose=0).shape == (1, 34, 2)


def test_gnn_training_ignores_unlabelled_nodes():
    from models.zoo.structured.gnn import masked_accuracy

    assert masked_accuracy(np.array([[-1, 0, 1, -1]]), np.array([[[0, 1], [1, 0], [0, 1], [1, 0]]])) == 1.0
    trained = tiny_trained("gnn")
    assert np.isfinite(trained.metric)


@pytest.mark.parametrize("name", ["word2vec", "transformer", "transformer_seq2seq", "gnn"])
def test_no_lambda_layers(name):
    model = tiny_trained(name).load()
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
