"""Synthetic training data for the demo models: coloured shapes on neutral backgrounds, with captions.

Every image is a pure function of a seed, so the data set needs no download and no storage. Each sample carries its
ground truth (shape, colour, position cell, centre, size and mask of every object), which `checker.py` is validated
against and which the ControlNet evaluation compares generated shapes to.

Design choices that keep the task learnable by a tiny model and checkable by a simple program:
- shapes are axis-aligned (square, upright triangle, circle), so the fraction of the bounding box they fill tells
  them apart (1.0, 0.5, pi/4);
- object colours are saturated hues, backgrounds are low-saturation greys with a gentle gradient and tint, so
  saturation alone separates objects from background;
- positions are cells of a 3x3 grid with jitter well inside each cell, so the centroid names the cell unambiguously;
- two objects are placed in the outer cells of a row or column, near the edges, so they never touch.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # shapes are rasterised at 4x and averaged down: anti-aliased edges like a real render

SHAPES = ("circle", "square", "triangle")
# name -> base RGB in [0, 1]; hues 0, 60, 120, 240 degrees (far apart, so the checker can name them)
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10),
    "yellow": (0.90, 0.82, 0.10),
    "green": (0.12, 0.70, 0.16),
    "blue": (0.12, 0.22, 0.88),
}
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
# (row, column) -> how captions say it
POSITION_PHRASES: dict[tuple[str, str], str] = {
    ("top", "left"): "at the top left",
    ("top", "center"): "at the top",
    ("top", "right"): "at the top right",
    ("middle", "left"): "on the left",
    ("middle", "center"): "in the center",
    ("middle", "right"): "on the right",
    ("bottom", "left"): "at the bottom left",
    ("bottom", "center"): "at the bottom",
    ("bottom", "right"): "at the bottom right",
}
POSITIONS = tuple(POSITION_PHRASES)
CELL_CENTRES = (18.0, 32.0, 46.0)  # pixel centre of each row / column
JITTER = 3.0  # centres move at most this far from their cell centre
# side of the bounding box, pixels (inclusive): a shape spans 3-4 latent pixels of the 8x VAE, enough for its
# corners to survive the autoencoder; the largest just fits in the image at the edge cells
SIZE_RANGE = (22, 30)
# Two objects sit further apart than two cells, near the image's edges along their row or column, so that they can
# be drawn nearly as large as single objects: the 8x VAE turned every shape of 16-20 px into a round blob.
TWO_OBJECT_SIZE_RANGE = (20, 24)
PAIR_CENTRES = (15.0, 49.0)  # along the pair's axis; still nearest to the left / right (top / bottom) cell centres
PAIR_JITTER = 2.0  # 34 px apart, at least 30 with jitter: a gap of 6 px or more between two 24 px shapes

# caption kinds and how often training draws them
CAPTION_MIX = {"plain": 0.4, "positioned": 0.4, "pair": 0.2}

# Positioned single-object captions never shown in training: evaluation on them tests that the model composes
# colour, shape and position rather than memorising whole captions. Every colour, shape and position still occurs.
HELD_OUT: frozenset[tuple[str, str, tuple[str, str]]] = frozenset(
    (colour, shape, position)
    for i, (colour, shape, position) in enumerate(itertools.product(COLOURS, SHAPES, POSITIONS))
    if i % 9 == 4
)


@dataclass
class ShapeObject:
    """Ground truth of one drawn object; `mask` is True where the object covers at least half a pixel."""

    shape: str
    colour: str
    position: tuple[str, str]  # (row, column)
    centre: tuple[float, float]  # (x, y) in pixels
    size: float
    mask: np.ndarray = field(repr=False)


@dataclass
class Sample:
    """One training image (uint8 HxWx3), its caption and the objects drawn in it."""

    image: np.ndarray = field(repr=False)
    caption: str
    objects: list[ShapeObject]


@dataclass(frozen=True)
class ObjectSpec:
    """What to draw: the caption names `shape`, `colour` and, if `named_position`, the position."""

    shape: str
    colour: str
    position: tuple[str, str]
    named_position: bool


def object_phrase(spec: ObjectSpec) -> str:
    text = f"a {spec.colour} {spec.shape}"
    return f"{text} {POSITION_PHRASES[spec.position]}" if spec.named_position else text


def caption_for(specs: list[ObjectSpec]) -> str:
    """The caption of a scene: "a red circle at the top left", "a blue square and a green triangle"."""
    return " and ".join(object_phrase(s) for s in specs)


def coverage(shape: str, centre: tuple[float, float], size: float) -> np.ndarray:
    """Fraction of each pixel covered by `shape` (float32 HxW), by rasterising at SUPERSAMPLE x resolution.

    circle: diameter `size`; square: side `size`; triangle: upright, base and height `size` (apex at the top).
    """
    n = IMAGE_SIZE * SUPERSAMPLE
    coords = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE  # sub-pixel centres in pixel units
    x, y = coords[None, :], coords[:, None]
    cx, cy = centre
    half = size / 2
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= half**2
    elif shape == "square":
        inside = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    elif shape == "triangle":
        top, bottom = cy - half, cy + half
        # the half-width grows linearly from 0 at the apex to `half` at the base
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= (y - top) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return inside.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)


def background(rng: np.random.Generator) -> np.ndarray:
    """A neutral grey (level 0.3-0.7) with a faint tint and a gentle linear gradient: low saturation throughout."""
    level = rng.uniform(0.3, 0.7)
    tint = rng.uniform(-0.03, 0.03, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.0, 0.12)
    ramp = np.linspace(-0.5, 0.5, IMAGE_SIZE, dtype=np.float32)
    gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    return np.clip(level + tint[None, None, :] + strength * gradient[:, :, None], 0, 1).astype(np.float32)


def object_colour(colour: str, rng: np.random.Generator) -> np.ndarray:
    """The named colour with a little brightness jitter, so the model sees shades rather than one RGB value."""
    base = np.array(COLOURS[colour], dtype=np.float32)
    return np.clip(base * rng.uniform(0.85, 1.1), 0, 1)


def render(specs: list[ObjectSpec], rng: np.random.Generator) -> Sample:
    """Draw `specs` on a random background with random sizes and jitter; returns the image and ground truth."""
    image = background(rng)
    size_range = TWO_OBJECT_SIZE_RANGE if len(specs) > 1 else SIZE_RANGE
    objects = []
    pair_axis = _pair_axis(specs)
    for spec in specs:
        row, col = spec.position
        cx = _centre(COLUMNS.index(col), pair_axis == "x", rng)
        cy = _centre(ROWS.index(row), pair_axis == "y", rng)
        size = float(rng.integers(size_range[0], size_range[1] + 1))
        alpha = coverage(spec.shape, (cx, cy), size)
        image = image * (1 - alpha[..., None]) + object_colour(spec.colour, rng) * alpha[..., None]
        objects.append(ShapeObject(spec.shape, spec.colour, spec.position, (cx, cy), size, alpha >= 0.5))
    pixels = np.round(image * 255).astype(np.uint8)
    return Sample(pixels, caption_for(specs), objects)


def _pair_axis(specs: list[ObjectSpec]) -> str | None:
    """"x" for two objects side by side, "y" for one above the other, None for one object."""
    if len(specs) < 2:
        return None
    return "x" if specs[0].position[1] != specs[1].position[1] else "y"


def _centre(cell: int, on_pair_axis: bool, rng: np.random.Generator) -> float:
    """Pixel coordinate of an object in grid cell `cell` (0, 1, 2) along one axis, jittered."""
    if on_pair_axis:  # pairs use only the outer cells (0 and 2) along their axis
        return PAIR_CENTRES[cell // 2] + rng.uniform(-PAIR_JITTER, PAIR_JITTER)
    return CELL_CENTRES[cell] + rng.uniform(-JITTER, JITTER)


def _pick(rng: np.random.Generator, options: tuple | list) -> object:
    return options[int(rng.integers(len(options)))]


def random_specs(rng: np.random.Generator, split: str = "train") -> list[ObjectSpec]:
    """Objects for one scene, drawn with CAPTION_MIX. `split`: "train" avoids HELD_OUT, "held_out" uses only it
    for positioned captions (plain and pair captions are shared by both splits)."""
    kind = str(rng.choice(list(CAPTION_MIX), p=list(CAPTION_MIX.values())))
    if kind == "pair":
        first, second = _pair_positions(rng)
        colours = rng.permutation(len(COLOURS))[:2]
        names = list(COLOURS)
        return [
            ObjectSpec(str(_pick(rng, SHAPES)), names[colours[0]], first, False),
            ObjectSpec(str(_pick(rng, SHAPES)), names[colours[1]], second, False),
        ]
    while True:
        spec = ObjectSpec(str(_pick(rng, SHAPES)), str(_pick(rng, list(COLOURS))), _pick(rng, POSITIONS),
                          kind == "positioned")  # type: ignore[arg-type]
        if not spec.named_position:
            return [spec]
        held = (spec.colour, spec.shape, spec.position) in HELD_OUT
        if held == (split == "held_out"):
            return [spec]


def _pair_positions(rng: np.random.Generator) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two cells two apart along a row or a column (left/right or top/bottom), in random order."""
    if rng.random() < 0.5:
        row = str(_pick(rng, ROWS))
        pair = ((row, "left"), (row, "right"))
    else:
        col = str(_pick(rng, COLUMNS))
        pair = (("top", col), ("bottom", col))
    return pair if rng.random() < 0.5 else (pair[1], pair[0])


def sample(seed: int, split: str = "train") -> Sample:
    """The sample of index `seed`: the same seed always gives the same image, caption and ground truth."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    return render(random_specs(rng, split), rng)


def samples(start: int, count: int, split: str = "train") -> Iterator[Sample]:
    """Samples `start`, ..., `start + count - 1` of `split`."""
    for seed in range(start, start + count):
        yield sample(seed, split)


def images_and_captions(start: int, count: int, split: str = "train") -> tuple[np.ndarray, list[str]]:
    """A batch as arrays: images float32 [N, 3, H, W] in [-1, 1] (the VAE's range) and their captions."""
    batch = list(samples(start, count, split))
    images = np.stack([s.image for s in batch]).astype(np.float32) / 127.5 - 1.0
    return images.transpose(0, 3, 1, 2).copy(), [s.caption for s in batch]
