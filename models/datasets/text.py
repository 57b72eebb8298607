"""Procedural text data (fixed seeds, no download) for word2vec and the two transformers.

* :func:`synonym_corpus` - sentences from a small grammar in which every concept is spelled by
  several interchangeable words (planted synonym groups), for word2vec.
* :func:`first_keyword_sequences` - token sequences whose class is the keyword set that occurs
  FIRST, while other keyword sets often occur more often (order matters, bag-of-words fails).
* :func:`reversal_translation` - "translation" = reverse the source and map every token through one
  of two fixed permutations, chosen by its neighbour (agreement rule).
"""
from __future__ import annotations

import numpy as np

from models.spec import Split, Splits

# ---------------------------------------------------------------------------------------------------
# word2vec: grammar with planted synonym groups
# ---------------------------------------------------------------------------------------------------

#: function words shared by every sentence (frequent, uninformative context); group label -1
FUNCTION_WORDS = ("the", "a", "and", "of", "very", "then")
_PARTS = ("noun", "verb", "adj")


class SynonymGrammar:
    """Concepts in three parts of speech; each concept has ``synonyms`` surface words.

    A sentence is ``[fw] adj1 noun1 verb noun2 [fw] adj2`` where the verb, the object noun and both
    adjectives are drawn from the subject noun's own random preferences. Words of one concept therefore
    share exactly the same context distribution, while different concepts have different ones.
    """

    def __init__(self, concepts_per_part: int, synonyms: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.synonyms = synonyms
        self.words: list[str] = list(FUNCTION_WORDS)
        self.groups: list[int] = [-1] * len(FUNCTION_WORDS)
        self.concepts: dict[str, list[np.ndarray]] = {}
        group = 0
        for part in _PARTS:
            self.concepts[part] = []
            for c in range(concepts_per_part):
                ids = np.arange(len(self.words), len(self.words) + synonyms)
                self.words += [f"{part}{c}_{s}" for s in range(synonyms)]
                self.groups += [group] * synonyms
                self.concepts[part].append(ids)
                group += 1
        n = concepts_per_part
        k = max(2, n // 4)  # each noun prefers k verbs, k objects, k adjectives
        # k random permutations: every concept is preferred by exactly k nouns (none is left unused)
        self.prefs = {part: np.stack([rng.permutation(n) for _ in range(k)], axis=1)
                      for part in ("verb", "noun", "adj")}

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def sentences(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        n_concepts = len(self.concepts["noun"])
        k = self.prefs["verb"].shape[1]
        syn = lambda part, c: self.concepts[part][c][rng.integers(self.synonyms)]  # noqa: E731
        fw = lambda: rng.integers(len(FUNCTION_WORDS))  # noqa: E731
        for _ in range(n):
            s = rng.integers(n_concepts)
            adj1, adj2 = self.prefs["adj"][s][rng.integers(k, size=2)]
            verb = self.prefs["verb"][s][rng.integers(k)]
            obj = self.prefs["noun"][s][rng.integers(k)]
            words = [fw(), syn("adj", adj1), syn("noun", s), syn("verb", verb), fw(), syn("noun", obj),
                     fw(), syn("adj", adj2)]
            out.append(np.array(words, dtype="int32"))
        return out


def skipgram_pairs(sentences, window: int) -> tuple[np.ndarray, np.ndarray]:
    """All (target, context) pairs within ``window`` positions."""
    targets, contexts = [], []
    for sent in sentences:
        for i, t in enumerate(sent):
            lo, hi = max(0, i - window), min(len(sent), i + window + 1)
            for j in range(lo, hi):
                if j != i:
                    targets.append(t)
                    contexts.append(sent[j])
    return np.array(targets, "int32"), np.array(contexts, "int32")


def synonym_corpus(concepts_per_part: int, synonyms: int, n_sentences: int, window: int, seed: int = 0):
    """Splits for word2vec.

    train/val: x = target word ids (n, 1) (real lookup-model inputs), y = context word ids (n,),
    from disjoint sentences. test: x = every word id (V, 1), y = its synonym group (-1: function word),
    which is what recall@5 is scored on. Returns ``(splits, grammar)``.
    """
    grammar = SynonymGrammar(concepts_per_part, synonyms, seed=1234)  # the language itself is fixed
    rng = np.random.default_rng(seed)
    sents = grammar.sentences(n_sentences, rng)
    n_val = max(1, n_sentences // 10)
    tr_t, tr_c = skipgram_pairs(sents[n_val:], window)
    va_t, va_c = skipgram_pairs(sents[:n_val], window)
    ids = np.arange(grammar.vocab_size, dtype="int32")[:, None]
    groups = np.array(grammar.groups, "int64")
    return Splits(Split(tr_t[:, None], tr_c), Split(va_t[:, None], va_c), Split(ids, groups)), grammar


# ---------------------------------------------------------------------------------------------------
# transformer: which keyword set comes first
# ---------------------------------------------------------------------------------------------------

def first_keyword_sequences(n: int, seq_len: int, vocab: int, n_classes: int, keywords_per_class: int,
                            seed: int = 0, noise_vocab: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random token sequences with planted keywords; label = the set of the EARLIEST keyword.

    Ids ``1 .. n_classes * keywords_per_class`` are keywords (set ``(id - 1) // keywords_per_class``),
    the rest (up to ``noise_vocab - 1``, default ``vocab - 1``) are uniform noise words. Each sequence holds 2-3 keyword sets; the first set
    appears 1-2 times, the others 1-3 times, so the most frequent set is often not the answer.
    """
    rng = np.random.default_rng(seed)
    n_kw = n_classes * keywords_per_class
    x = rng.integers(n_kw + 1, noise_vocab or vocab, size=(n, seq_len)).astype("int32")
    y = np.zeros(n, "int64")
    for i in range(n):
        sets = rng.choice(n_classes, rng.integers(2, min(3, n_classes) + 1), replace=False)
        counts = [rng.integers(1, 3)] + [rng.integers(1, 4) for _ in sets[1:]]
        positions = np.sort(rng.choice(seq_len, sum(counts), replace=False))
        first_pos, rest = positions[0], list(rng.permutation(positions[1:]))
        plan = [(first_pos, sets[0])]
        plan += [(rest.pop(), sets[0]) for _ in range(counts[0] - 1)]
        for s, c in zip(sets[1:], counts[1:]):
            plan += [(rest.pop(), s) for _ in range(c)]
        for pos, s in plan:
            x[i, pos] = 1 + s * keywords_per_class + rng.integers(keywords_per_class)
        y[i] = sets[0]
    return x, y


# ---------------------------------------------------------------------------------------------------
# transformer_seq2seq: reversal + token mapping
# ---------------------------------------------------------------------------------------------------

PAD, START = 0, 1  # target-side special ids; source and target words use ids >= 2


def reversal_translation(n: int, seq_len: int, vocab: int, seed: int = 0, mapping_seed: int = 99):
    """Source: ``seq_len`` random words (ids 2..vocab-1). Target: the source reversed, every word mapped
    through one of two fixed permutations of 2..vocab-1, chosen by the parity of the word before it in
    the reversed sentence (a small "agreement" rule: each output needs two source positions).
    Returns source, decoder input (START + target[:-1]) and target."""
    rng = np.random.default_rng(seed)
    maps = np.tile(np.arange(vocab), (2, 1))
    mrng = np.random.default_rng(mapping_seed)
    maps[:, 2:] = 2 + np.stack([mrng.permutation(vocab - 2) for _ in range(2)])
    src = rng.integers(2, vocab, size=(n, seq_len)).astype("int32")
    rev = src[:, ::-1]
    prev_parity = np.concatenate([np.zeros((n, 1), int), rev[:, :-1] % 2], axis=1)
    tgt = maps[prev_parity, rev].astype("int32")
    dec_in = np.concatenate([np.full((n, 1), START, "int32"), tgt[:, :-1]], axis=1)
    return src, dec_in, tgt


__all__ = ["SynonymGrammar", "skipgram_pairs", "synonym_corpus", "first_keyword_sequences",
           "reversal_translation", "PAD", "START", "FUNCTION_WORDS"]
