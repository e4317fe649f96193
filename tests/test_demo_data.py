"""The demo data set is deterministic and its checker reads its ground truth back (no torch models involved)."""
from __future__ import annotations

import numpy as np
import pytest

from nodegraph_demo import checker, dataset


def test_same_seed_same_sample() -> None:
    a, b = dataset.sample(7), dataset.sample(7)
    assert np.array_equal(a.image, b.image)
    assert a.caption == b.caption
    assert [(o.shape, o.colour, o.position, o.centre, o.size) for o in a.objects] == \
        [(o.shape, o.colour, o.position, o.centre, o.size) for o in b.objects]
    assert not np.array_equal(a.image, dataset.sample(8).image)


def test_images_are_uint8_rgb_of_the_model_size() -> None:
    s = dataset.sample(0)
    assert s.image.shape == (dataset.IMAGE_SIZE, dataset.IMAGE_SIZE, 3) and s.image.dtype == np.uint8
    images, captions = dataset.images_and_captions(0, 4)
    assert images.shape == (4, 3, dataset.IMAGE_SIZE, dataset.IMAGE_SIZE)
    assert -1.0 <= images.min() and images.max() <= 1.0
    assert captions == [dataset.sample(i).caption for i in range(4)]


def test_captions_name_the_drawn_objects() -> None:
    for s in dataset.samples(0, 50):
        wanted = checker.parse_caption(s.caption)
        assert [(w.shape, w.colour) for w in wanted] == [(o.shape, o.colour) for o in s.objects]
        for w, o in zip(wanted, s.objects):
            assert w.position in (None, o.position)


def test_held_out_captions_never_appear_in_training() -> None:
    def positioned(split: str) -> set[tuple]:
        found = set()
        for s in dataset.samples(0, 800, split):
            for w in checker.parse_caption(s.caption):
                if w.position is not None:
                    found.add((w.colour, w.shape, w.position))
        return found

    train, held = positioned("train"), positioned("held_out")
    assert not train & dataset.HELD_OUT
    assert held <= dataset.HELD_OUT and len(held) == len(dataset.HELD_OUT)


def test_two_objects_never_touch() -> None:
    pairs = [s for s in dataset.samples(0, 300) if len(s.objects) == 2]
    assert len(pairs) > 30
    for s in pairs:
        a, b = (o.mask for o in s.objects)
        assert not (a & b).any()


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_checker_reads_ground_truth(split: str) -> None:
    accuracy = checker.ground_truth_accuracy(list(dataset.samples(20_000, 200, split)))
    assert min(accuracy.values()) >= 0.99, accuracy


def test_checker_rejects_the_wrong_caption() -> None:
    s = next(s for s in dataset.samples(0, 100) if len(s.objects) == 1)
    o = s.objects[0]
    other_colour = next(c for c in dataset.COLOURS if c != o.colour)
    other_shape = next(x for x in dataset.SHAPES if x != o.shape)
    assert checker.score(s.image, f"a {o.colour} {o.shape}").all
    wrong = checker.score(s.image, f"a {other_colour} {other_shape}")
    assert not wrong.colour and not wrong.shape and wrong.count


def test_checker_on_a_blank_image() -> None:
    grey = np.full((64, 64, 3), 128, np.uint8)
    assert checker.detect(grey) == []
    assert checker.score(grey, "a red circle") == checker.Score(False, False, False, False)


def test_parse_caption_refuses_other_text() -> None:
    with pytest.raises(ValueError):
        checker.parse_caption("a photo of a cat")
