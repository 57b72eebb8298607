"""Procedural scenes: 1-3 coloured shapes on a noisy background, with their boxes.

Shared by the ``yolo`` detector (boxes + classes) and ``vqa_fusion`` ("is there a
<colour> <shape>?"). Everything is drawn with numpy from a seeded generator, so a
seed always gives the same images. Boxes are ``(x0, y0, x1, y1)`` normalised to
[0, 1]; shapes never overlap and (for the detector) never share a grid cell.
"""
from __future__ import annotations

import numpy as np

from models.datasets import split_arrays
from models.spec import Split, Splits

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.1),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.9, 0.1),
}
COLOUR_NAMES = tuple(COLOURS)


def _mask(shape: str, xx, yy, cx, cy, r):
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    if shape == "triangle":  # apex up, base 2r wide at cy + r
        return (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
    raise ValueError(shape)


def draw_scene(rng: np.random.Generator, size: int, n_objects: int, grid: int | None = None,
               radius=(0.09, 0.2), max_tries: int = 200):
    """One image (size x size x 3, float32 in [0, 1]) and its objects.

    Returns ``image, objects`` with objects a list of ``(shape_idx, colour_idx, box)``.
    ``grid`` (S) makes every object's centre fall in a different cell of an S x S grid.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    xx, yy = (xx + 0.5) / size, (yy + 0.5) / size
    bg = rng.uniform(0.0, 0.35)
    image = np.full((size, size, 3), bg, "float32") + rng.normal(0, 0.04, (size, size, 3)).astype("float32")
    objects, boxes, cells = [], [], set()
    for _ in range(max_tries):
        if len(objects) == n_objects:
            break
        r = rng.uniform(*radius)
        cx, cy = rng.uniform(r, 1 - r, size=2)
        box = np.array([cx - r, cy - r, cx + r, cy + r], "float32")
        if any(not (box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1]) for b in boxes):
            continue  # overlaps an earlier shape
        cell = (min(int(cy * grid), grid - 1), min(int(cx * grid), grid - 1)) if grid else None
        if grid and cell in cells:
            continue
        shape, colour = rng.integers(len(SHAPES)), rng.integers(len(COLOURS))
        rgb = np.asarray(COLOURS[COLOUR_NAMES[colour]], "float32") + rng.normal(0, 0.04, 3).astype("float32")
        image[_mask(SHAPES[shape], xx, yy, cx, cy, r)] = rgb
        objects.append((int(shape), int(colour), box))
        boxes.append(box)
        cells.add(cell)
    return image.clip(0, 1), objects


# ----------------------------------------------------------------------------------------- detection


def detection_scenes(n: int, size: int = 64, seed: int = 0, max_objects: int = 3, grid: int = 8):
    """``n`` images with 1..max_objects shapes; returns images and a list of (boxes[k,4], classes[k])."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), "float32")
    targets = []
    for i in range(n):
        images[i], objects = draw_scene(rng, size, int(rng.integers(1, max_objects + 1)), grid=grid)
        boxes = np.array([o[2] for o in objects], "float32").reshape(-1, 4)
        targets.append((boxes, np.array([o[0] for o in objects], "int64")))
    return images, targets


# ----------------------------------------------------------------------------------------------- VQA

#: question vocabulary; 0 is padding
VOCAB = ("<pad>", "is", "there", "a", "any", "do", "you", "see", "in", "the", "image", "?") + COLOUR_NAMES + SHAPES
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
_TEMPLATES = (
    "is there a {c} {s} ?",
    "is there any {c} {s} in the image ?",
    "do you see a {c} {s} ?",
)
QUESTION_LENGTH = 10


def encode_question(text: str, length: int = QUESTION_LENGTH) -> np.ndarray:
    ids = [WORD_ID[w] for w in text.split()][:length]
    return np.array(ids + [0] * (length - len(ids)), "int32")


def _question(rng, shape: int, colour: int) -> np.ndarray:
    return encode_question(_TEMPLATES[rng.integers(len(_TEMPLATES))].format(c=COLOUR_NAMES[colour], s=SHAPES[shape]))


def vqa_scenes(n: int, size: int = 32, seed: int = 0, max_objects: int = 3, radius=(0.09, 0.2),
               paired: bool = True):
    """``n`` (image, question token ids, yes=1/no=0 answer) samples, balanced.

    "Yes" questions ask about a (colour, shape) in the image, "no" questions about one
    that is not, 70% of them hard negatives that share the colour or the shape of a
    present object. ``paired``: every image is asked one yes and one no question (two
    consecutive samples, n/2 images; the contrast teaches shape much faster than one
    question per image); else one question per image, yes or no at random.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), "float32")
    questions = np.empty((n, QUESTION_LENGTH), "int32")
    answers = np.empty(n, "int64")
    i = 0
    while i < n:
        image, objects = draw_scene(rng, size, int(rng.integers(1, max_objects + 1)), radius=radius)
        present = {(o[0], o[1]) for o in objects}
        kinds = (1, 0) if paired else (int(rng.random() < 0.5),)
        for answer in kinds[: n - i]:
            if answer:
                shape, colour = sorted(present)[rng.integers(len(present))]
            else:
                absent = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS)) if (s, c) not in present]
                hard = [(s, c) for s, c in absent if any(s == ps or c == pc for ps, pc in present)]
                pool = hard if hard and rng.random() < 0.7 else absent
                shape, colour = pool[rng.integers(len(pool))]
            images[i], questions[i], answers[i] = image, _question(rng, shape, colour), answer
            i += 1
    return images, questions, answers


def vqa_splits(n: int, size: int, seed: int, radius=(0.09, 0.2), paired: bool = True) -> Splits:
    """Train/val/test 60/20/20, split by image (both questions of an image land in the same split)."""
    images, questions, answers = vqa_scenes(n, size, seed, radius=tuple(radius), paired=paired)
    image_id = np.arange(n) // 2 if paired else np.arange(n)
    ids = np.unique(image_id)
    by_image = split_arrays(ids, ids, seed, stratify=False)

    def pick(part) -> Split:
        ix = np.flatnonzero(np.isin(image_id, part.x))
        return Split({"image": images[ix], "question_tokens": questions[ix]}, answers[ix])

    return Splits(pick(by_image.train), pick(by_image.val), pick(by_image.test))


__all__ = ["SHAPES", "COLOURS", "COLOUR_NAMES", "VOCAB", "draw_scene", "detection_scenes", "vqa_scenes",
           "vqa_splits", "encode_question", "QUESTION_LENGTH"]
