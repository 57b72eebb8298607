"""Procedural coloured shapes and textures: an offline 10-class CIFAR stand-in at any image size.

Each image is one object (a shape or a textured patch) of random size (60-90% of
the image wide), position and colour on a random, darker background with a colour
gradient, plus Gaussian pixel noise. Sizes, positions and texture periods scale
with the image size, so the same generator serves 32x32 and 64x64 models (and
224x224 inputs for resnet50). Everything is seeded.
"""
from __future__ import annotations

import numpy as np

from models.datasets import split_arrays
from models.spec import Splits

CLASSES = (
    "disc", "square", "triangle", "ring", "cross",
    "h_stripes", "v_stripes", "checker", "diag_stripes", "frame",
)


def _mask(kind: int, u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """Coverage mask (bool, HxW) of class ``kind`` centred at the origin of (u, v), half-size ``r``.

    ``u``/``v`` are pixel offsets from the centre (x right, y down); texture periods are in pixels.
    """
    box = (np.abs(u) <= r) & (np.abs(v) <= r)
    period = max(4.0, r / 2.2)
    if kind == 0:  # filled disc
        return u ** 2 + v ** 2 <= r ** 2
    if kind == 1:  # filled square
        return box
    if kind == 2:  # upward triangle
        return (v <= r) & (v >= -r) & (np.abs(u) <= (v + r) / 2)
    if kind == 3:  # ring (annulus)
        d = np.sqrt(u ** 2 + v ** 2)
        return (d <= r) & (d >= r * 0.6)
    if kind == 4:  # plus-shaped cross
        w = r * 0.3
        return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    phase = rng.uniform(0, period)
    if kind == 5:  # horizontal stripes in a square patch
        return box & (((v + phase) % period) < period / 2)
    if kind == 6:  # vertical stripes
        return box & (((u + phase) % period) < period / 2)
    if kind == 7:  # checkerboard
        return box & (((np.floor((u + phase) / period) + np.floor((v + phase) / period)) % 2) == 0)
    if kind == 8:  # diagonal stripes (either diagonal)
        s = u + v if rng.random() < 0.5 else u - v
        return box & (((s + phase) % (period * 1.4)) < period * 0.7)
    if kind == 9:  # hollow square (frame)
        inner = (np.abs(u) <= r * 0.6) & (np.abs(v) <= r * 0.6)
        return box & ~inner
    raise ValueError(kind)


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and a foreground colour; the foreground is brighter (mean RGB) by at least 0.25.

    Keeping the edge polarity fixed (light object, darker background) is what lets the
    seed's single-conv-layer cnn64 learn the task from a few thousand images; colours
    themselves are still random.
    """
    while True:
        bg, fg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if fg.mean() - bg.mean() >= 0.25:
            return bg, fg


def render(kind: int, size: int, rng: np.random.Generator, noise: float = 0.06) -> np.ndarray:
    """One size x size x 3 float32 image in [0, 1] of class ``kind``."""
    bg, fg = _colours(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype("float32") + 0.5
    # background: base colour plus a random linear gradient
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / size - 0.5
    img = bg[None, None, :] + rng.uniform(0, 0.25) * ramp[..., None] * rng.uniform(-1, 1, 3)
    r = rng.uniform(0.3, 0.45) * size  # half-size of the object (60-90% of the image wide)
    cx, cy = rng.uniform(r, size - r, 2)  # fully inside the image
    mask = _mask(kind, xx - cx, yy - cy, r, rng)
    img = np.where(mask[..., None], fg[None, None, :], img)
    img = img + rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 1).astype("float32")


def shapes_images(n: int, size: int = 32, seed: int = 0, noise: float = 0.06) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (balanced over the 10 classes, shuffled) and their int64 labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    x = np.stack([render(int(k), size, rng, noise) for k in labels]) if n else np.zeros((0, size, size, 3), "float32")
    return x, labels.astype("int64")


def shapes(n: int = 3000, size: int = 32, seed: int = 0, noise: float = 0.06) -> Splits:
    """The shapes task split 60/20/20 (stratified). The image content depends only on ``seed``."""
    x, y = shapes_images(n, size, seed, noise)
    return split_arrays(x, y, seed)
