"""Procedural sequence datasets (no downloads): a seasonal series, waveform families, keyword-like spectrograms.

Everything is generated with numpy from a seed, so a (config, seed) pair always gives the same splits.
"""
from __future__ import annotations

import numpy as np

from models.datasets import split_arrays
from models.spec import Split, Splits

# --------------------------------------------------------------------------------------------- seasonal series

#: seasonal components of the forecasting series: (period in steps, amplitude, phase)
SEASONS = ((24, 1.0, 0.0), (12, 0.5, 0.5), (8, 0.3, 1.0))


def seasonal_signal(t: np.ndarray, seasons=SEASONS) -> np.ndarray:
    """The noise-free series: a sum of sinusoids (e.g. hourly data with 24 h, 12 h and 8 h seasonality)."""
    return sum(a * np.sin(2 * np.pi * t / p + ph) for p, a, ph in seasons)


def seasonal_windows(length: int, window: int, sigma: float, seed: int,
                     train: float = 0.7, val: float = 0.15) -> Splits:
    """One noisy series of ``length`` steps cut into (window, 1) inputs -> next value (shape (1,)).

    The split is chronological (train, then val, then test): forecasting must not see the future. The noise is
    i.i.d. N(0, sigma^2), so no forecaster can beat RMSE = sigma on the test split; a random phase offset per
    seed shifts where the series starts.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length + window) + rng.integers(0, 24)
    x = (seasonal_signal(t) + sigma * rng.standard_normal(len(t))).astype("float32")
    w = np.lib.stride_tricks.sliding_window_view(x, window + 1)
    xs, ys = np.ascontiguousarray(w[:, :window, None]), np.ascontiguousarray(w[:, window:])
    n = len(xs)
    a, b = int(train * n), int((train + val) * n)
    return Splits(Split(xs[:a], ys[:a]), Split(xs[a:b], ys[a:b]), Split(xs[b:], ys[b:]))


# --------------------------------------------------------------------------------------------- waveform families

WAVEFORMS = ("sine", "square", "sawtooth", "triangle", "chirp")


def _wave(kind: str, phase: np.ndarray) -> np.ndarray:
    """A unit waveform of the given family evaluated at ``phase`` (in cycles)."""
    frac = np.mod(phase, 1.0)
    if kind in ("sine", "chirp"):
        return np.sin(2 * np.pi * phase)
    if kind == "square":
        return np.where(frac < 0.5, 1.0, -1.0)
    if kind == "sawtooth":
        return 2.0 * frac - 1.0
    if kind == "triangle":
        return 1.0 - 4.0 * np.abs(frac - 0.5)
    raise ValueError(kind)


def waveforms(n: int, length: int, seed: int, cycles: tuple = (1.5, 4.0), noise: tuple = (0.02, 0.15)) -> Splits:
    """``n`` noisy waveforms of ``length`` steps, (length, 1) each, labelled by family (WAVEFORMS).

    Random per sample: frequency (``cycles`` per window), phase, amplitude (0.5-1.5), DC offset (+-0.3) and a
    Gaussian noise level drawn from ``noise``. A chirp starts at 1-2 cycles per window and sweeps its frequency
    linearly up to 2.5-4 x that over the window.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(WAVEFORMS)
    rng.shuffle(y)
    u = np.linspace(0.0, 1.0, length, endpoint=False)[None]  # time in windows
    chirp = (y == WAVEFORMS.index("chirp"))[:, None]
    f0 = np.where(chirp, rng.uniform(1.0, 2.0, (n, 1)), rng.uniform(*cycles, (n, 1)))
    f1 = f0 * np.where(chirp, rng.uniform(2.5, 4.0, (n, 1)), 1.0)
    phase = rng.uniform(size=(n, 1)) + f0 * u + 0.5 * (f1 - f0) * u ** 2
    x = np.empty((n, length))
    for label, kind in enumerate(WAVEFORMS):
        rows = y == label
        x[rows] = _wave(kind, phase[rows])
    x = x * rng.uniform(0.5, 1.5, (n, 1)) + rng.uniform(-0.3, 0.3, (n, 1))
    x += rng.uniform(*noise, (n, 1)) * rng.standard_normal((n, length))
    return split_arrays(x[..., None].astype("float32"), y.astype("int64"), seed)


# --------------------------------------------------------------------------------------------- keyword spectrograms

def _keyword_templates(n_classes: int, n_mels: int, vocab_seed: int = 1234):
    """Fixed "words": 3-phoneme sequences over a shared inventory of 6 phonemes.

    A phoneme is 2-3 formant bands gliding from start to end bins. Words reuse phonemes (some are the same
    phonemes in another order), so a bag of spectral frames is not enough: the order matters.
    """
    rng = np.random.default_rng(vocab_seed)  # the vocabulary does not depend on the data seed
    phonemes = []
    for _ in range(6):
        n_formants = rng.integers(2, 4)
        start = np.sort(rng.uniform(2, n_mels - 3, n_formants))
        end = np.clip(start + rng.uniform(-6, 6, n_formants), 1, n_mels - 2)
        phonemes.append((rng.uniform(0.6, 1.4), start, end, rng.uniform(0.6, 1.0)))
    words, seen = [], set()
    while len(words) < n_classes:
        seq = tuple(int(i) for i in rng.choice(len(phonemes), 3, replace=False))
        if seq not in seen:
            seen.add(seq)
            words.append([phonemes[i] for i in seq])
    return words


def keyword_spectrograms(n: int, seed: int, frames: int = 100, n_mels: int = 40, n_classes: int = 10,
                         noise: float = 0.25) -> Splits:
    """``n`` log-mel-like (frames, n_mels) patterns of ``n_classes`` procedural keywords.

    Each keyword is a fixed sequence of 3 phonemes (see ``_keyword_templates``). Per utterance: word length
    35-80 frames at a random onset (time stretch + shift), per-phoneme duration jitter, formant shift of +-2
    bins, bandwidth 1-2.5 bins, loudness 0.6-1.4, on a background of 0.2 plus Gaussian noise of std ``noise``
    (values roughly in [-0.6, 2.2]).
    """
    rng = np.random.default_rng(seed)
    words = _keyword_templates(n_classes, n_mels)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    bins = np.arange(n_mels, dtype="float32")
    x = np.empty((n, frames, n_mels), "float32")
    for i, label in enumerate(y):
        segs = words[label]
        total = rng.integers(35, 81)
        onset = rng.integers(0, frames - total + 1)
        durs = np.array([s[0] for s in segs]) * rng.uniform(0.7, 1.3, len(segs))
        edges = np.round(np.concatenate([[0], np.cumsum(durs)]) / durs.sum() * total).astype(int) + onset
        shift, width, loud = rng.uniform(-2, 2), rng.uniform(1.0, 2.5), rng.uniform(0.6, 1.4)
        spec = 0.2 + noise * rng.standard_normal((frames, n_mels))
        for (_, start, end, level), a, b in zip(segs, edges[:-1], edges[1:]):
            if b <= a:
                continue
            frac = np.linspace(0.0, 1.0, b - a)[:, None]
            centres = start[None] + (end - start)[None] * frac + shift  # (frames_seg, formants)
            bumps = np.exp(-0.5 * ((bins[None, None] - centres[..., None]) / width) ** 2).sum(1)
            spec[a:b] += loud * level * bumps
        x[i] = spec
    return split_arrays(x, y.astype("int64"), seed)


__all__ = ["SEASONS", "seasonal_signal", "seasonal_windows", "WAVEFORMS", "waveforms", "keyword_spectrograms"]
