"""The in-memory CLIP tokenizers: the real openai vocabulary and the small prefixes of it used by tiny models."""
from __future__ import annotations

import pytest

from nodegraph_nodes.diffusion.tokenizer import (
    BYTE_VOCAB_SIZE,
    FULL_VOCAB_SIZE,
    clip_tokenizer,
    clip_vocab,
    tokenizer_from_spec,
    tokenizer_spec,
)


@pytest.fixture(scope="module")
def real():
    return clip_tokenizer()


def test_real_vocabulary_gives_openai_clip_ids(real):
    assert len(real) == FULL_VOCAB_SIZE == 49408
    assert real("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (real.bos_token_id, real.eos_token_id, real.pad_token_id) == (49406, 49407, 49407)


def test_real_tokenizer_lowercases_cleans_whitespace_and_pads_to_77(real):
    assert real("  A\tPHOTO \n\n of a   Cat ").input_ids == real("a photo of a cat").input_ids
    padded = real("a photo of a cat", padding="max_length", max_length=real.model_max_length, truncation=True)
    assert real.model_max_length == 77
    assert len(padded.input_ids) == 77 and padded.input_ids[7:] == [49407] * 70
    truncated = real("cat " * 100, truncation=True, max_length=77).input_ids
    assert len(truncated) == 77 and truncated[-1] == 49407


def test_openclip_style_padding_uses_exclamation_mark_id_zero():
    tokenizer = clip_tokenizer(pad_token="!")
    padded = tokenizer("a cat", padding="max_length", max_length=8).input_ids
    assert padded == [49406, 320, 2368, 49407, 0, 0, 0, 0]


def test_byte_level_vocabulary_spells_words_out_and_keeps_specials_last():
    tokenizer = clip_tokenizer(BYTE_VOCAB_SIZE)
    assert len(tokenizer) == 514
    ids = tokenizer("a cat").input_ids
    assert ids[0] == 512 and ids[-1] == 513
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["a</w>", "c", "a", "t</w>"]


def test_small_vocabulary_is_a_prefix_of_the_real_one(real):
    vocab, merges = clip_vocab(4096)
    full_vocab, _ = clip_vocab()
    assert len(merges) == 4096 - BYTE_VOCAB_SIZE
    assert all(full_vocab[token] == i for token, i in vocab.items() if i < 4094)
    small = clip_tokenizer(4096)
    # common words are single tokens with the real ids; only the specials move to the end
    assert small("a photo of a cat").input_ids == [4094, 320, 1125, 539, 320, 2368, 4095]


def test_spec_round_trip_rebuilds_the_same_tokenizer():
    tokenizer = clip_tokenizer(1000, pad_token="!")
    rebuilt = tokenizer_from_spec(tokenizer_spec(tokenizer))
    assert len(rebuilt) == 1000 and rebuilt.pad_token == "!"
    text = "A red square on grey, 3 cats!"
    assert rebuilt(text).input_ids == tokenizer(text).input_ids


@pytest.mark.parametrize("size", [0, BYTE_VOCAB_SIZE - 1, FULL_VOCAB_SIZE + 1])
def test_vocabulary_size_out_of_range_is_refused(size):
    with pytest.raises(ValueError, match="between 514 and 49408"):
        clip_vocab(size)
