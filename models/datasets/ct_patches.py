"""Procedural CT-like lung patches with or without a nodule (offline stand-in for lung nodule data).

A patch is a grey lung window: dark parenchyma with smooth low-frequency texture, a
piece of brighter chest wall along one random edge, branching vessels (bright
curved lines of varying width, some seen end-on as small bright dots) and pixel
noise. A positive patch additionally holds one nodule: a soft-edged bright blob,
round or slightly elongated, of random radius, contrast and position inside the lung.
Vessel cross-sections are small dots, so the model must use size, shape and
contrast rather than "any bright spot". Grey values are repeated over 3 channels
(like windowed CT slices saved as RGB images), in [0, 1]. Everything is seeded.
"""
from __future__ import annotations

import numpy as np

from models.datasets import split_arrays
from models.spec import Splits


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a cells x cells grid bilinearly upsampled."""
    from scipy.ndimage import zoom  # deferred: SciPy

    grid = rng.normal(0, 1, (cells, cells))
    return zoom(grid, size / cells, order=1)[:size, :size]


def _vessels(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """A few bright curved tubes (quadratic curves) plus end-on vessel dots."""
    out = np.zeros((size, size))
    for _ in range(rng.integers(1, 5)):
        # a curve y = a + b x + c x^2 in a random rotated frame
        theta = rng.uniform(0, np.pi)
        u = (xx - size / 2) * np.cos(theta) + (yy - size / 2) * np.sin(theta)
        v = -(xx - size / 2) * np.sin(theta) + (yy - size / 2) * np.cos(theta)
        a, c = rng.uniform(-0.4, 0.4) * size, rng.uniform(-1.5, 1.5) / size
        dist = np.abs(v - (a + c * u ** 2))
        width = rng.uniform(0.7, 1.8)
        out = np.maximum(out, rng.uniform(0.2, 0.45) * np.exp(-0.5 * (dist / width) ** 2))
    for _ in range(rng.integers(2, 8)):  # vessels seen end-on: small dots
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(1.0, 2.0)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        out = np.maximum(out, rng.uniform(0.3, 0.6) * np.exp(-0.5 * d2 / r ** 2))
    return out


def _nodule(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """One soft-edged bright blob, radius 5-12 px, possibly slightly elongated."""
    r = rng.uniform(5.0, 12.0)
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    theta = rng.uniform(0, np.pi)
    elong = rng.uniform(1.0, 1.5)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    d = np.sqrt((u / elong) ** 2 + (v * elong) ** 2)
    edge = rng.uniform(0.8, 2.0)
    return rng.uniform(0.35, 0.65) / (1 + np.exp((d - r) / edge))


def render(has_nodule: bool, size: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """One size x size x 3 float32 patch in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype("float64")
    img = 0.12 + 0.04 * _smooth_field(rng, size, 6) + 0.02 * _smooth_field(rng, size, 24)
    # chest wall: a bright band entering from a random side
    side = rng.integers(4)
    coord = (xx, yy, size - 1 - xx, size - 1 - yy)[side]
    wall = rng.uniform(0.0, 0.2) * size + 4 * _smooth_field(rng, size, 4)
    img = np.where(coord < wall, rng.uniform(0.55, 0.75), img)
    img = img + _vessels(rng, yy, xx, size)
    if has_nodule:
        img = img + _nodule(rng, yy, xx, size)
    img = img + rng.normal(0, noise, img.shape)
    grey = np.clip(img, 0, 1).astype("float32")
    return np.repeat(grey[..., None], 3, axis=-1)


def ct_patches_images(n: int, size: int = 128, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``n`` patches (half with a nodule, shuffled) and int64 labels (1 = nodule)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    x = np.stack([render(bool(k), size, rng, noise) for k in labels])
    return x, labels.astype("int64")


def ct_patches(n: int = 1000, size: int = 128, seed: int = 0, noise: float = 0.05,
               val: float = 0.2, test: float = 0.2) -> Splits:
    """The nodule task split train/val/test (stratified)."""
    x, y = ct_patches_images(n, size, seed, noise)
    return split_arrays(x, y, seed, val=val, test=test)
