"""Procedural image/audio pairs that agree or not (an offline stand-in for video + soundtrack).

Each of three classes has a look and a sound:

=========  =========  ===============================================
class      image      sound (0.5 s at 4 kHz)
=========  =========  ===============================================
circle     a circle   a steady low tone (300-500 Hz)
square     a square   a steady high tone (1200-1600 Hz)
triangle   a triangle a rising chirp (400 -> 1600 Hz)
=========  =========  ===============================================

The chirp sweeps through both steady bands, so telling it apart needs the order of
the frames, not just which frequencies occur. Every sound has a random onset,
duration, amplitude and background noise; every image a random colour, position and
size. A pair is labelled 1 when image and sound come from the same class (half of
them), else 0. The audio input is a log-magnitude spectrogram, ``(frames, bins)``.
"""
from __future__ import annotations

import numpy as np

from models.datasets import split_arrays
from models.datasets.scenes import COLOUR_NAMES, COLOURS, SHAPES, _mask
from models.spec import Splits

SAMPLE_RATE = 4000
N_SAMPLES = 2000  # 0.5 s
FRAME, HOP = 128, 64
N_BINS = 32  # FRAME // 2 frequency bins averaged in pairs
N_FRAMES = 1 + (N_SAMPLES - FRAME) // HOP  # 30


def sound(rng: np.random.Generator, cls: int) -> np.ndarray:
    """A waveform of class ``cls`` (float32, N_SAMPLES)."""
    t = np.arange(N_SAMPLES) / SAMPLE_RATE
    if cls == 0:
        freq = np.full_like(t, rng.uniform(300, 500))
    elif cls == 1:
        freq = np.full_like(t, rng.uniform(1200, 1600))
    else:
        f0, f1 = rng.uniform(350, 450), rng.uniform(1500, 1700)
        freq = f0 + (f1 - f0) * t / t[-1]
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    start = rng.uniform(0.0, 0.15)
    length = rng.uniform(0.25, 0.5 - start)
    envelope = ((t >= start) & (t <= start + length)).astype("float64")
    wave = rng.uniform(0.3, 1.0) * envelope * np.sin(phase) + rng.normal(0, rng.uniform(0.05, 0.3), N_SAMPLES)
    return wave.astype("float32")


def spectrogram(wave: np.ndarray) -> np.ndarray:
    """Log-magnitude STFT (Hann window), (N_FRAMES, N_BINS) float32, roughly in [-1, 1]."""
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(N_FRAMES)[:, None]
    frames = wave[idx] * np.hanning(FRAME)
    mag = np.abs(np.fft.rfft(frames, axis=-1))[:, : 2 * N_BINS]
    mag = mag.reshape(N_FRAMES, N_BINS, 2).mean(-1)
    return ((np.log1p(mag) - 1.0) / 2.0).astype("float32")


def picture(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """One shape of class ``cls`` on a noisy background (size x size x 3 in [0, 1])."""
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    xx, yy = (xx + 0.5) / size, (yy + 0.5) / size
    image = np.full((size, size, 3), rng.uniform(0, 0.35), "float32")
    image += rng.normal(0, 0.04, image.shape).astype("float32")
    r = rng.uniform(0.15, 0.35)
    cx, cy = rng.uniform(r, 1 - r, size=2)
    rgb = np.asarray(COLOURS[COLOUR_NAMES[rng.integers(len(COLOURS))]], "float32")
    image[_mask(SHAPES[cls], xx, yy, cx, cy, r)] = rgb
    return image.clip(0, 1)


def pairs(n: int, size: int = 32, seed: int = 0):
    """``n`` (image, spectrogram, agree) triples, half agreeing."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), "float32")
    audio = np.empty((n, N_FRAMES, N_BINS), "float32")
    labels = np.empty(n, "int64")
    k = len(SHAPES)
    for i in range(n):
        img_cls = int(rng.integers(k))
        agree = rng.random() < 0.5
        snd_cls = img_cls if agree else int((img_cls + rng.integers(1, k)) % k)
        images[i] = picture(rng, img_cls, size)
        audio[i] = spectrogram(sound(rng, snd_cls))
        labels[i] = int(agree)
    return images, audio, labels


def av_splits(n: int, size: int, seed: int) -> Splits:
    images, audio, labels = pairs(n, size, seed)
    return split_arrays({"image": images, "audio": audio}, labels, seed)


__all__ = ["pairs", "av_splits", "sound", "spectrogram", "picture", "N_FRAMES", "N_BINS"]
