"""CLIP tokenizers built in memory from the bundled BPE merges: no hub, no tokenizer files on disk.

Real checkpoints carry no tokenizer, so the real openai CLIP vocabulary ships with us as
`data/clip_bpe_merges.txt.gz` (see `data/README.md`). The vocabulary is derived from the merges the way CLIP derives
it: the 256 byte characters, the same with the end-of-word marker `</w>`, one token per merge, then the two special
tokens. Taking only the first N merges gives a smaller, still valid CLIP tokenizer that splits common words exactly
as CLIP does, which keeps tiny test models tiny (the token embedding dominates a tiny text encoder).
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_LENGTH = 77
BYTE_VOCAB_SIZE = 2 * 256 + 2  # byte characters, the same with "</w>", and the two special tokens
FULL_VOCAB_SIZE = 49408  # openai CLIP: BYTE_VOCAB_SIZE + 48894 merges

MERGES_FILE = "clip_bpe_merges.txt.gz"


@lru_cache(maxsize=1)
def _byte_characters() -> tuple[str, ...]:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255, in CLIP's vocabulary order.

    Printable bytes map to themselves; the rest map to code points from 256 upwards, so no token is whitespace or a
    control character. The order (printable ranges first) is what fixes the ids of the first 512 tokens.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return tuple(chr(c) for c in chars)


@lru_cache(maxsize=1)
def _all_merges() -> tuple[tuple[str, str], ...]:
    """All 48894 merge rules of openai CLIP, in priority order, read once from the bundled data file."""
    data = resources.files(__package__).joinpath("data", MERGES_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return tuple(tuple(line.split(" ")) for line in lines if line)  # type: ignore[misc]


def clip_vocab(vocab_size: int | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP vocabulary (token -> id) and merge list for `vocab_size` ids (None: the full 49408).

    `vocab_size` counts the 514 byte-level and special tokens plus one token per merge, so any value from 514 to
    49408 is valid; the special tokens always take the last two ids.
    """
    size = FULL_VOCAB_SIZE if vocab_size is None else vocab_size
    if not BYTE_VOCAB_SIZE <= size <= FULL_VOCAB_SIZE:
        raise ValueError(f"CLIP vocab_size must be between {BYTE_VOCAB_SIZE} and {FULL_VOCAB_SIZE}, got {size}")
    merges = list(_all_merges()[: size - BYTE_VOCAB_SIZE])
    byte_chars = _byte_characters()
    tokens = list(byte_chars) + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def clip_tokenizer(vocab_size: int | None = None, pad_token: str = EOS_TOKEN) -> CLIPTokenizer:
    """A CLIP tokenizer (lowercasing, whitespace-cleaning, max length 77) over the first `vocab_size` ids.

    None gives the real openai CLIP tokenizer ("a photo of a cat" -> 49406, 320, 1125, 539, 320, 2368, 49407).
    `pad_token` is EOS for CLIP-L (SD1, SDXL's first encoder); SDXL's OpenCLIP encoder pads with "!" (id 0).
    """
    vocab, merges = clip_vocab(vocab_size)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=pad_token,
        model_max_length=MAX_LENGTH,
    )


def tokenizer_spec(tokenizer: CLIPTokenizer) -> dict[str, object]:
    """What `tokenizer_from_spec` needs to rebuild this tokenizer: recorded in tiny checkpoints' metadata."""
    return {"vocab_size": len(tokenizer), "pad_token": str(tokenizer.pad_token)}


def tokenizer_from_spec(spec: dict[str, object]) -> CLIPTokenizer:
    """Rebuild a tokenizer recorded with `tokenizer_spec`."""
    return clip_tokenizer(int(spec["vocab_size"]), pad_token=str(spec.get("pad_token", EOS_TOKEN)))
