"""What the demo LoRA teaches and how it is checked: giant shapes, 42-50 px wide, in the middle of the picture.

The base demo model's objects are 22-30 px (`dataset.SIZE_RANGE`); the checker calls a picture giant when its main
object's bounding box is at least `GIANT_MIN_SIDE` px on its longer side, with the usual colour and shape checks
(`checker.score`) still applying, so "LoRA on" must draw the prompt's object, only bigger.
"""
from __future__ import annotations

import numpy as np

from . import dataset
from .checker import detect

GIANT_SIZE_RANGE = (42, 50)
GIANT_MIN_SIDE = 38  # the base model's largest objects measure ~31 px after the VAE; the LoRA's ~40-50
CENTRE_JITTER = 3.0


def giant_sample(seed: int) -> tuple[np.ndarray, str]:
    """One giant single-object picture (uint8 HxWx3) and its plain caption ("a red circle")."""
    rng = np.random.default_rng([seed, 7])
    shape = dataset.SHAPES[int(rng.integers(len(dataset.SHAPES)))]
    colour = list(dataset.COLOURS)[int(rng.integers(len(dataset.COLOURS)))]
    image = dataset.background(rng)
    centre = tuple(32.0 + rng.uniform(-CENTRE_JITTER, CENTRE_JITTER) for _ in range(2))
    size = float(rng.integers(GIANT_SIZE_RANGE[0], GIANT_SIZE_RANGE[1] + 1))
    alpha = dataset.coverage(shape, centre, size)
    image = image * (1 - alpha[..., None]) + dataset.object_colour(colour, rng) * alpha[..., None]
    return np.round(image * 255).astype(np.uint8), f"a {colour} {shape}"


def giant_images_and_captions(start: int, count: int) -> tuple[np.ndarray, list[str]]:
    """Float32 [N, 3, H, W] in [-1, 1] (the VAE's range) and captions, as `dataset.images_and_captions`."""
    pairs = [giant_sample(seed) for seed in range(start, start + count)]
    images = np.stack([p[0] for p in pairs]).astype(np.float32) / 127.5 - 1.0
    return images.transpose(0, 3, 1, 2).copy(), [p[1] for p in pairs]


def main_object_side(image: np.ndarray) -> int:
    """The longer side in pixels of the largest object's bounding box (0 when there is none)."""
    found = detect(image)
    if not found:
        return 0
    ys, xs = np.nonzero(found[0].mask)
    return int(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))


def is_giant(image: np.ndarray) -> bool:
    """Whether the main object is drawn in the LoRA's giant style."""
    return main_object_side(image) >= GIANT_MIN_SIDE
