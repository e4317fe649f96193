"""ComfyUI's prompt weighting syntax, parsed into (text, weight) segments. Pure Python, no torch.

The rules, as ComfyUI applies them (so that a workflow gives the same conditioning here and there):

- `(words)` multiplies the weight of `words` by 1.1; groups nest, so `((words))` is 1.1 * 1.1.
- `(words:1.3)` *sets* the weight to 1.3. The number is whatever follows the group's last colon; it replaces the
  weight accumulated so far instead of multiplying it, so `((words:1.3))` is 1.3, while `((words):1.3)` is
  1.1 * 1.3 (the inner group multiplies the 1.3 set by the outer one). If the text after the last colon is not a
  number (`(12:30 pm)`), the colon is kept as text and the group counts as a plain `(...)`.
- `\\(` and `\\)` are literal parentheses: they never open or close a group, and the backslash is dropped.
- Square brackets are plain text. ComfyUI has no `[words]` de-emphasis (that is A1111 syntax); it tokenizes the
  brackets like any other character, and so do we.
- Unbalanced parentheses follow ComfyUI's depth counting: an unclosed `(` leaves the rest of the prompt as plain
  text (the `(` included); a `)` with no group open is kept as text and takes the depth below zero, so the next
  `(` only brings it back to zero and is text too (`a) (b) (c)` is all plain text; in `a) ((b))` only `b` is
  weighted).
- `embedding:name` (textual inversion) is not interpreted here: it stays in the segment's text, and the text encoder
  (`text_encoding` with `embeddings.py`) replaces it by the embedding's vectors.

Deliberate difference: ComfyUI accepts any string Python's `float` accepts as a weight, including `nan` and `inf`,
which poison the whole conditioning. Here a non-finite number is not a weight, and the group reads as `(...)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: The factor a bare pair of parentheses applies.
EMPHASIS = 1.1


@dataclass(frozen=True)
class Segment:
    """A run of prompt text that shares one weight."""

    text: str
    weight: float


def parse_prompt_weights(prompt: str) -> list[Segment]:
    """Split `prompt` into consecutive segments with their weights, in prompt order.

    Segments carry the text as the tokenizer should see it: group parentheses and weight suffixes removed,
    escaped parentheses unescaped. Empty groups produce no segment, and the empty prompt gives no segments.
    """
    return _weigh(_unescape(prompt), 1.0)


# A prompt is handled as a list of (character, literal) pairs: `literal` marks characters that came from an escape
# and so never act as syntax. Parsing then works on structure, and text is rebuilt only for the final segments.
_Chars = list[tuple[str, bool]]


def _unescape(prompt: str) -> _Chars:
    """Turn `\\(` and `\\)` into literal parentheses; every other character (a lone backslash too) stays as is."""
    chars: _Chars = []
    i = 0
    while i < len(prompt):
        if prompt[i] == "\\" and i + 1 < len(prompt) and prompt[i + 1] in "()":
            chars.append((prompt[i + 1], True))
            i += 2
        else:
            chars.append((prompt[i], False))
            i += 1
    return chars


def _is(char: tuple[str, bool], symbol: str) -> bool:
    return char[0] == symbol and not char[1]


def _top_level_pieces(chars: _Chars) -> list[_Chars]:
    """Cut `chars` into plain runs and top-level `( ... )` groups, by ComfyUI's depth counting.

    A `(` seen at depth zero starts a new piece; the `)` that brings the depth back to zero ends it (both kept in
    the piece). A `)` that takes the depth below zero is just text, as is any `(` or `)` seen below zero.
    """
    pieces: list[_Chars] = []
    current: _Chars = []
    depth = 0
    for char in chars:
        if _is(char, "("):
            if depth == 0:
                if current:
                    pieces.append(current)
                current = []
            current.append(char)
            depth += 1
        elif _is(char, ")"):
            depth -= 1
            current.append(char)
            if depth == 0:
                pieces.append(current)
                current = []
        else:
            current.append(char)
    if current:
        pieces.append(current)
    return pieces


def _weigh(chars: _Chars, weight: float) -> list[Segment]:
    """Assign `weight` to plain runs of `chars` and recurse into its groups with their own weight."""
    segments: list[Segment] = []
    for piece in _top_level_pieces(chars):
        if len(piece) >= 2 and _is(piece[0], "(") and _is(piece[-1], ")"):
            inner, explicit = _split_weight(piece[1:-1])
            segments += _weigh(inner, explicit if explicit is not None else weight * EMPHASIS)
        else:
            segments.append(Segment("".join(c for c, _ in piece), weight))
    return segments


def _split_weight(inner: _Chars) -> tuple[_Chars, float | None]:
    """Split a group's `text:number` suffix off; (inner, None) when the group sets no weight.

    Only the last colon counts, and only when something precedes it (ComfyUI ignores a colon at position 0).
    """
    colon = max((i for i, char in enumerate(inner) if char[0] == ":"), default=-1)
    if colon <= 0:
        return inner, None
    try:
        value = float("".join(c for c, _ in inner[colon + 1 :]))
    except ValueError:
        return inner, None
    if not math.isfinite(value):
        return inner, None
    return inner[:colon], value
