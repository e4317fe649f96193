"""Deterministic prompt-adherence checker for the demo data: which shapes of which colours are where in an image.

It inverts `dataset.py`'s generator: objects are the saturated pixels (backgrounds are near-grey), each connected
blob's colour is the named hue nearest to its mean colour, its shape follows from how it tapers and fills the
corners of its bounding box (`shape_features`), and the centre of its bounding box names its cell of the 3x3
grid. `score` compares that with what a caption asks for; a larger picture (a hires-fix output) is first scaled
down to the data set's 64 px (`at_dataset_size`), where the areas and the grid above are defined. Validated against ground truth in
`tests/test_demo_data.py` and by `python -m nodegraph_demo.evaluate`.
"""
from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass, field

import cv2
import numpy as np

from .dataset import CELL_CENTRES, COLOURS, COLUMNS, IMAGE_SIZE, POSITION_PHRASES, ROWS, SHAPES

SATURATION_THRESHOLD = 0.4  # backgrounds stay below ~0.25, object colours are above ~0.8
MIN_AREA = 24  # pixels; smaller blobs are sampling specks, not objects (the smallest shape, a triangle, has ~100)
HUES = {name: colorsys.rgb_to_hsv(*rgb)[0] for name, rgb in COLOURS.items()}
_PHRASE_TO_POSITION = {phrase: pos for pos, phrase in POSITION_PHRASES.items()}
_OBJECT = re.compile(
    rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})(?: ({'|'.join(map(re.escape, _PHRASE_TO_POSITION))}))?$"
)


@dataclass
class Detection:
    """One object found in an image."""

    shape: str
    colour: str
    position: tuple[str, str]
    centre: tuple[float, float]  # (x, y) of the bounding box
    area: int
    mask: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Wanted:
    """One object a caption asks for; `position` None when the caption does not say where."""

    shape: str
    colour: str
    position: tuple[str, str] | None


@dataclass(frozen=True)
class Score:
    """How well an image follows a caption. For several objects each field holds for all of them.

    colour: every wanted colour is present (single object: the main blob has it).
    shape: every wanted (colour, shape) pair is present (single object: the main blob has the shape).
    position: every object whose position the caption names is there (True when none is named).
    count: exactly as many objects as asked for.
    """

    colour: bool
    shape: bool
    position: bool
    count: bool

    @property
    def all(self) -> bool:
        return self.colour and self.shape and self.position and self.count


def parse_caption(caption: str) -> list[Wanted]:
    """The objects a demo caption asks for ("a red circle at the top left and a blue square" -> two Wanted)."""
    wanted = []
    for part in caption.strip().lower().split(" and "):
        m = _OBJECT.match(part.strip())
        if m is None:
            raise ValueError(f"not a demo caption: {caption!r} (part {part!r})")
        wanted.append(Wanted(m[2], m[1], _PHRASE_TO_POSITION[m[3]] if m[3] else None))
    return wanted


def object_mask(image: np.ndarray) -> np.ndarray:
    """Pixels of saturated colour (bool HxW) in a uint8 RGB image."""
    rgb = image.astype(np.float32) / 255.0
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = (high - low) / np.maximum(high, 1e-6)
    return (saturation > SATURATION_THRESHOLD) & (high > 0.15)


def colour_name(rgb: np.ndarray) -> str:
    """The named colour whose hue is nearest (on the hue circle) to the mean RGB `rgb` in [0, 1]."""
    hue = colorsys.rgb_to_hsv(*[float(c) for c in rgb])[0]
    return min(HUES, key=lambda name: min(abs(hue - HUES[name]), 1 - abs(hue - HUES[name])))


def shape_features(mask: np.ndarray) -> tuple[float, float]:
    """(taper, corner fill) of a blob, measured in its bounding box.

    taper: mean width of the top third over that of the bottom third (generator's shapes: triangle ~0.25, circle
    and square 1). corner fill: covered fraction of the four corner squares of side 20% of the box (square 1,
    circle ~0.1). Both survive the blur of an 8x VAE, unlike edges and exact areas.
    """
    ys, xs = np.nonzero(mask)
    box = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    height, width = box.shape
    third = max(height // 3, 1)
    taper = float(box[:third].sum(axis=1).mean() / max(box[-third:].sum(axis=1).mean(), 1e-6))
    k = max(int(round(0.2 * min(height, width))), 1)
    corners = float(np.mean([box[:k, :k].mean(), box[:k, -k:].mean(), box[-k:, :k].mean(), box[-k:, -k:].mean()]))
    return taper, corners


TAPER_THRESHOLD = 0.65  # below: a triangle (VAE-blurred triangles measure ~0.5, circles and squares >= ~0.75)
CORNER_THRESHOLD = 0.42  # above: a square (blurred squares ~0.6, blurred circles ~0.25)


def shape_name(mask: np.ndarray) -> str:
    """Triangle if the blob tapers towards the top, else square if it fills its bounding box's corners, else circle.

    The thresholds sit between the generator's ideal shapes and were checked on ground truth passed through the
    demo VAE (see `ground_truth_accuracy`), so a recognisably drawn but soft-edged shape is still named right.
    """
    taper, corners = shape_features(mask)
    if taper < TAPER_THRESHOLD:
        return "triangle"
    return "square" if corners > CORNER_THRESHOLD else "circle"


def position_name(x: float, y: float) -> tuple[str, str]:
    """The 3x3 grid cell (row, column) whose centre is nearest to pixel (x, y)."""
    nearest = lambda v: int(np.argmin([abs(v - c) for c in CELL_CENTRES]))  # noqa: E731
    return ROWS[nearest(y)], COLUMNS[nearest(x)]


def detect(image: np.ndarray) -> list[Detection]:
    """Objects in a uint8 RGB image (HxWx3), largest first."""
    mask = object_mask(image)
    # an opening removes single-pixel specks and thin bridges that a sampler's noise may leave between blobs
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)).astype(bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    found = []
    for label in range(1, count):
        area = int(stats[label, cv2.CC_STAT_AREA])
        if area < MIN_AREA:
            continue
        blob = labels == label
        rgb = image[blob].astype(np.float32).mean(axis=0) / 255.0
        # the generator places the bounding box's centre (a triangle's centroid sits lower), so judge by that
        left, top, width, height = (int(stats[label, k]) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                                                    cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
        cx, cy = left + width / 2, top + height / 2
        found.append(Detection(shape_name(blob), colour_name(rgb), position_name(cx, cy), (cx, cy), area, blob))
    return sorted(found, key=lambda d: -d.area)


def at_dataset_size(image: np.ndarray) -> np.ndarray:
    """`image` at the data set's size (area-averaged down or up to IMAGE_SIZE square); unchanged when already so."""
    if image.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE):
        return image
    return cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)


def score(image: np.ndarray, caption: str) -> Score:
    """How `image` (uint8 RGB, any square size: see `at_dataset_size`) follows the demo `caption`."""
    image = at_dataset_size(image)
    wanted = parse_caption(caption)
    found = detect(image)
    count = len(found) == len(wanted)
    if len(wanted) == 1:
        want = wanted[0]
        if not found:
            return Score(False, False, False, False)
        main = found[0]
        position = want.position is None or main.position == want.position
        return Score(main.colour == want.colour, main.shape == want.shape, position, count)
    main = found[: len(wanted)]
    colour = all(any(d.colour == w.colour for d in main) for w in wanted)
    shape = all(any(d.colour == w.colour and d.shape == w.shape for d in main) for w in wanted)
    position = all(
        w.position is None or any(d.colour == w.colour and d.position == w.position for d in main) for w in wanted
    )
    return Score(colour, shape, position, count)


def ground_truth_accuracy(samples: list) -> dict[str, float]:
    """Accuracy of `detect` / `score` on generated ground truth (`dataset.Sample`s): the checker's own error rate.

    object_*: per drawn object, the detection at its centroid has the right attribute (a missed object counts wrong);
    caption: the sample's own caption scores as fully followed.
    """
    totals = {"object_colour": 0, "object_shape": 0, "object_position": 0, "caption": 0}
    n_objects = 0
    for s in samples:
        found = detect(s.image)
        for obj in s.objects:
            n_objects += 1
            x, y = (int(round(v)) for v in obj.centre)
            hit = next((d for d in found if d.mask[min(y, 63), min(x, 63)]), None)
            if hit is None:
                continue
            totals["object_colour"] += hit.colour == obj.colour
            totals["object_shape"] += hit.shape == obj.shape
            totals["object_position"] += hit.position == obj.position
        totals["caption"] += score(s.image, s.caption).all
    return {
        k: v / (len(samples) if k == "caption" else n_objects) for k, v in totals.items()
    }
