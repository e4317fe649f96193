"""Text encoding against diffusers' own `encode_prompt`, on tiny seeded CLIP models; plus weighting and windows."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
from hypothesis import given, strategies as st

from nodegraph_nodes.diffusion.text_encoding import (
    SD1,
    SDXL,
    SDXL_REFINER,
    ClipTextEncoder,
    TokenWindow,
    refiner_time_ids,
    sdxl_time_ids,
    tokenize_weighted,
)
from support import tiny as tf

PROMPT, NEGATIVE = "a photo of a cat", "blurry, low quality"


@pytest.fixture(scope="module")
def tok_l():
    return tf.tiny_tokenizer(pad_token=tf.EOS)


@pytest.fixture(scope="module")
def tok_g():
    return tf.tiny_tokenizer(pad_token="!")


@pytest.fixture(scope="module")
def clip_l(tok_l):
    return tf.tiny_clip_l(tok_l)


@pytest.fixture(scope="module")
def clip_g(tok_g):
    return tf.tiny_clip_g(tok_g)


@pytest.fixture(scope="module")
def sd1(clip_l, tok_l):
    return ClipTextEncoder(SD1, models={"l": clip_l}, tokenizers={"l": tok_l})


@pytest.fixture(scope="module")
def sdxl(clip_l, tok_l, clip_g, tok_g):
    return ClipTextEncoder(SDXL, models={"l": clip_l, "g": clip_g}, tokenizers={"l": tok_l, "g": tok_g})


@pytest.fixture(scope="module")
def refiner(clip_g, tok_g):
    return ClipTextEncoder(SDXL_REFINER, models={"g": clip_g}, tokenizers={"g": tok_g})


@pytest.fixture(scope="module")
def sd1_pipe(clip_l, tok_l):
    return tf.sd1_pipeline(clip_l, tok_l)


@pytest.fixture(scope="module")
def sd1_clip_skip_pipe(clip_l, tok_l):
    """diffusers 0.42.1's `clip_skip` branch reads `text_encoder.text_model.final_layer_norm`, which transformers
    >= 5.6 removed from `CLIPTextModel` (diffusers issue #14124, fix pending in PR #14043). Give a copy of the model
    that alias, outside the module registry, so the pipeline's own clip_skip code runs unchanged."""
    encoder = copy.deepcopy(clip_l)
    object.__setattr__(encoder, "text_model", encoder)
    return tf.sd1_pipeline(encoder, tok_l)


@pytest.fixture(scope="module")
def sdxl_pipe(clip_l, tok_l, clip_g, tok_g):
    return tf.sdxl_pipeline(clip_l, tok_l, clip_g, tok_g)


@pytest.fixture(scope="module")
def refiner_pipe(clip_g, tok_g):
    return tf.refiner_pipeline(clip_g, tok_g)


def words(n: int, offset: int = 0) -> str:
    """n one-letter words: n tokens with the byte-level tokenizer."""
    return " ".join("abcdefghijklmnopqrstuvwxyz"[(offset + i) % 26] for i in range(n))


# --- tokenization -------------------------------------------------------------------------------------------


def test_short_prompt_window_matches_the_tokenizer_padding(tok_l, tok_g) -> None:
    for tok in (tok_l, tok_g):
        (window,) = tokenize_weighted(tok, PROMPT)
        assert list(window.ids) == tok(PROMPT, padding="max_length", max_length=77).input_ids
        assert window.weights == (1.0,) * 77


def test_empty_prompt_is_one_window(tok_l) -> None:
    (window,) = tokenize_weighted(tok_l, "")
    assert window.ids[:2] == (tok_l.bos_token_id, tok_l.eos_token_id) and len(window.ids) == 77


def test_weights_follow_their_tokens(tok_l) -> None:
    (window,) = tokenize_weighted(tok_l, "ab (cd:1.5) ((e))")
    letters = tok_l("ab cd e", add_special_tokens=False).input_ids
    assert window.ids[:7] == (tok_l.bos_token_id, *letters, tok_l.eos_token_id)
    assert window.weights[:7] == (1.0, 1.0, 1.0, 1.5, 1.5, 1.1 * 1.1, 1.0)


def test_short_segment_moves_whole_to_the_next_window(tok_l) -> None:
    first, second = tokenize_weighted(tok_l, words(72) + " (abcde:1.2)")
    assert first.ids[73] == tok_l.eos_token_id and set(first.ids[74:]) == {tok_l.pad_token_id}
    assert second.weights[1:6] == (1.2,) * 5 and second.ids[6] == tok_l.eos_token_id


def test_long_segment_is_split_at_the_window_edge(tok_l) -> None:
    first, second = tokenize_weighted(tok_l, words(72) + " (abcdefghij:1.2)")
    assert first.weights[73:76] == (1.2,) * 3 and first.ids[76] == tok_l.eos_token_id
    assert second.weights[1:8] == (1.2,) * 7 and second.ids[8] == tok_l.eos_token_id


segments = st.lists(
    st.tuples(st.integers(1, 40), st.sampled_from([1.0, 0.5, 1.2, 2.0])), min_size=1, max_size=12
)


@given(segments)
def test_windows_keep_every_token_in_order_and_short_segments_whole(tok_l, parts) -> None:
    """Segments of n letters (one word: n tokens) with weights. The windows hold exactly those tokens and weights
    in order, each 77 long with BOS/EOS framing, and no window edge falls inside a segment shorter than 8 tokens."""
    windows = tokenize_weighted(tok_l, " ".join(f"({'x' * n}:{w})" for n, w in parts))
    contents = []
    for window in windows:
        assert len(window.ids) == len(window.weights) == 77 and window.ids[0] == tok_l.bos_token_id
        end = window.ids.index(tok_l.eos_token_id, 1)
        assert set(window.ids[end + 1 :]) <= {tok_l.pad_token_id}
        contents.append(list(zip(window.ids[1:end], window.weights[1:end])))
    x, x_end = tok_l.convert_tokens_to_ids(["x", "x</w>"])
    assert [pair for c in contents for pair in c] == [
        (x_end if i == n - 1 else x, w) for n, w in parts for i in range(n)
    ]
    edges = list(itertools.accumulate(len(c) for c in contents[:-1]))
    starts = list(itertools.accumulate([0] + [n for n, _ in parts]))
    for (n, _), start in zip(parts, starts):
        assert n >= 8 or not any(start < edge < start + n for edge in edges)


# --- SD1 ----------------------------------------------------------------------------------------------------


def encode_sd1(pipe, prompt, negative, clip_skip=None):
    return pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative, clip_skip=clip_skip)


def test_sd1_equals_the_pipeline_exactly(sd1, sd1_pipe) -> None:
    positive, negative = encode_sd1(sd1_pipe, PROMPT, NEGATIVE)
    cond = sd1.encode(PROMPT)
    assert cond.embeds.shape == (1, 77, tf.L_HIDDEN) and cond.pooled is None and cond.time_ids is None
    assert torch.equal(cond.embeds, positive)
    assert torch.equal(sd1.encode(NEGATIVE).embeds, negative)


@pytest.mark.parametrize("comfy_layer, clip_skip", [(-2, 1), (-3, 2)])
def test_sd1_last_layer_is_diffusers_clip_skip_plus_one(sd1, sd1_clip_skip_pipe, comfy_layer, clip_skip) -> None:
    positive, _ = encode_sd1(sd1_clip_skip_pipe, PROMPT, NEGATIVE, clip_skip=clip_skip)
    skipped = sd1.with_last_layer(comfy_layer).encode(PROMPT).embeds
    assert torch.equal(skipped, positive)
    assert not torch.equal(skipped, sd1.encode(PROMPT).embeds)


@pytest.mark.parametrize("layer", [-1, -(tf.LAYERS + 1), -24])
def test_sd1_last_layer_and_beyond_the_depth_are_the_default(sd1, layer) -> None:
    assert torch.equal(sd1.with_last_layer(layer).encode(PROMPT).embeds, sd1.encode(PROMPT).embeds)


def test_last_layer_must_count_from_the_end(sd1) -> None:
    with pytest.raises(ValueError):
        sd1.with_last_layer(0)


def test_every_encoder_of_the_family_needs_a_model(clip_l, tok_l) -> None:
    with pytest.raises(ValueError):
        ClipTextEncoder(SDXL, models={"l": clip_l}, tokenizers={"l": tok_l})


# --- SDXL and refiner ---------------------------------------------------------------------------------------


def test_sdxl_equals_the_pipeline(sdxl, sdxl_pipe) -> None:
    positive, negative, pooled, negative_pooled = sdxl_pipe.encode_prompt(
        PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=NEGATIVE
    )
    cond, uncond = sdxl.encode(PROMPT), sdxl.encode(NEGATIVE)
    assert cond.embeds.shape == (1, 77, tf.L_HIDDEN + tf.G_HIDDEN) and cond.pooled.shape == (1, tf.G_PROJECTION)
    pairs = [(cond.embeds, positive), (uncond.embeds, negative), (cond.pooled, pooled)]
    pairs.append((uncond.pooled, negative_pooled))
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_sdxl_separate_prompts_go_to_l_and_g(sdxl, sdxl_pipe) -> None:
    text_l, text_g = "a cat", "a dog in the snow"
    positive, _, pooled, _ = sdxl_pipe.encode_prompt(
        text_l, prompt_2=text_g, device="cpu", do_classifier_free_guidance=False
    )
    cond = sdxl.encode({"l": text_l, "g": text_g})
    torch.testing.assert_close(cond.embeds, positive, rtol=0, atol=1e-6)
    torch.testing.assert_close(cond.pooled, pooled, rtol=0, atol=1e-6)


def test_sdxl_clip_skip_counts_from_the_penultimate_layer(sdxl, sdxl_pipe) -> None:
    positive, *_ = sdxl_pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False, clip_skip=1)
    skipped = sdxl.with_last_layer(-3).encode(PROMPT)
    torch.testing.assert_close(skipped.embeds, positive, rtol=0, atol=1e-6)
    assert torch.equal(skipped.pooled, sdxl.encode(PROMPT).pooled), "pooled always comes from the final layer"


def test_refiner_equals_the_pipeline(refiner, refiner_pipe) -> None:
    positive, negative, pooled, negative_pooled = refiner_pipe.encode_prompt(
        PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=NEGATIVE
    )
    cond, uncond = refiner.encode(PROMPT), refiner.encode(NEGATIVE)
    assert cond.embeds.shape == (1, 77, tf.G_HIDDEN)
    pairs = [(cond.embeds, positive), (uncond.embeds, negative), (cond.pooled, pooled)]
    pairs.append((uncond.pooled, negative_pooled))
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_sdxl_time_ids_equal_the_pipeline(sdxl_pipe) -> None:
    theirs = sdxl_pipe._get_add_time_ids(
        (1024, 768), (16, 32), (896, 640), dtype=torch.float32, text_encoder_projection_dim=tf.G_PROJECTION
    )
    ours = sdxl_time_ids(height=1024, width=768, crop_h=16, crop_w=32, target_height=896, target_width=640)
    assert torch.equal(ours, theirs)


def test_refiner_time_ids_equal_the_pipeline(refiner_pipe) -> None:
    positive, negative = refiner_pipe._get_add_time_ids(
        (1024, 768), (16, 32), (1024, 768), aesthetic_score=6.0, negative_aesthetic_score=2.5,
        negative_original_size=(512, 512), negative_crops_coords_top_left=(0, 0), negative_target_size=(512, 512),
        dtype=torch.float32, text_encoder_projection_dim=tf.G_PROJECTION,
    )
    assert torch.equal(refiner_time_ids(height=1024, width=768, crop_h=16, crop_w=32, aesthetic_score=6.0), positive)
    assert torch.equal(refiner_time_ids(height=512, width=512, aesthetic_score=2.5), negative)


# --- weighting ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["sd1", "sdxl", "refiner"])
def test_weight_one_everywhere_is_the_plain_encoding(request, encoder) -> None:
    enc = request.getfixturevalue(encoder)
    plain = enc.encode("a photo of a cat")
    for prompt in ["a (photo:1.0) of a cat", "(a photo of a cat:1)", "((a photo:1.0)) of a cat"]:
        cond = enc.encode(prompt)
        assert torch.equal(cond.embeds, plain.embeds)
        assert cond.pooled is None or torch.equal(cond.pooled, plain.pooled)


@pytest.mark.parametrize("encoder", ["sd1", "sdxl", "refiner"])
def test_a_weight_moves_only_its_own_rows_along_the_line_from_the_empty_prompt(request, encoder) -> None:
    """Weighting is applied after encoding, per row: other rows are bit-identical, and a weighted row sits at
    `empty + (plain - empty) * w` (it *is* the empty prompt's row at weight 0). Pooled ignores weights."""
    enc = request.getfixturevalue(encoder)
    plain, empty = enc.encode("a cat sat"), enc.encode("")
    cat = torch.zeros(77, dtype=torch.bool)
    cat[2:5] = True  # after BOS and "a": the three letters of "cat"
    for weight in (1.5, 0.0, -1.0):
        weighted = enc.encode(f"a (cat:{weight}) sat")
        assert torch.equal(weighted.embeds[:, ~cat], plain.embeds[:, ~cat])
        expected = (plain.embeds[:, cat] - empty.embeds[:, cat]) * weight + empty.embeds[:, cat]
        assert torch.equal(weighted.embeds[:, cat], expected)
        assert weighted.pooled is None or torch.equal(weighted.pooled, plain.pooled)
    assert torch.equal(enc.encode("a (cat:0) sat").embeds[:, cat], empty.embeds[:, cat])


# --- long prompts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["sd1", "sdxl"])
def test_a_150_token_prompt_is_two_windows_encoded_separately(request, encoder) -> None:
    enc = request.getfixturevalue(encoder)
    cond = enc.encode(words(150))
    assert cond.embeds.shape[1] == 154
    first, second = enc.encode(words(75)), enc.encode(words(75, offset=75))
    assert torch.equal(cond.embeds[:, :77], first.embeds)
    assert torch.equal(cond.embeds[:, 77:], second.embeds)
    assert cond.pooled is None or torch.equal(cond.pooled, first.pooled)


def test_a_75_token_prompt_fits_one_window(sd1) -> None:
    assert sd1.encode(words(75)).embeds.shape[1] == 77
    assert sd1.encode(words(76)).embeds.shape[1] == 154


def test_sdxl_pads_the_shorter_prompt_with_empty_windows(sdxl) -> None:
    cond = sdxl.encode({"l": words(100), "g": "a dog"})
    assert cond.embeds.shape == (1, 154, tf.L_HIDDEN + tf.G_HIDDEN)
    g_part = cond.embeds[..., tf.L_HIDDEN :]
    g_alone = sdxl.encode({"l": "", "g": "a dog"}).embeds[..., tf.L_HIDDEN :]
    g_empty = sdxl.encode("").embeds[..., tf.L_HIDDEN :]
    assert torch.equal(g_part[:, :77], g_alone) and torch.equal(g_part[:, 77:], g_empty)


def test_tokens_round_trip_through_encode_tokens(sdxl) -> None:
    tokens = sdxl.tokenize("a (cat:1.3)")
    assert all(isinstance(w, TokenWindow) for windows in tokens.values() for w in windows)
    assert torch.equal(sdxl.encode_tokens(tokens).embeds, sdxl.encode("a (cat:1.3)").embeds)
