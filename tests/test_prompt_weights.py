"""ComfyUI prompt weighting syntax: examples for each rule, and properties checked against a model of the syntax."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, strategies as st

from nodegraph_nodes.diffusion.prompt_weights import EMPHASIS, Segment, parse_prompt_weights


def pairs(prompt: str) -> list[tuple[str, float]]:
    return [(s.text, s.weight) for s in parse_prompt_weights(prompt)]


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a red cat", [("a red cat", 1.0)]),
        ("", []),
        ("a (red) cat", [("a ", 1.0), ("red", 1.1), (" cat", 1.0)]),
        ("((red))", [("red", 1.1 * 1.1)]),
        ("(red:1.3)", [("red", 1.3)]),
        ("(red:0)", [("red", 0.0)]),
        ("(red:-0.5)", [("red", -0.5)]),
        ("(red: 1.5 )", [("red", 1.5)]),
        # An explicit weight replaces what the enclosing groups accumulated...
        ("((red:1.3))", [("red", 1.3)]),
        # ...and groups inside an explicitly weighted one multiply it.
        ("((red):1.3)", [("red", 1.3 * 1.1)]),
        ("(big (red:2) cat:0.5)", [("big ", 0.5), ("red", 2.0), (" cat", 0.5)]),
        ("(a (b) c)", [("a ", 1.1), ("b", 1.1 * 1.1), (" c", 1.1)]),
        ("(a)(b)", [("a", 1.1), ("b", 1.1)]),
        # Only the last colon counts; text after it that is no number leaves the colon as text.
        ("(ratio 16:9:1.2)", [("ratio 16:9", 1.2)]),
        ("(at 12:30 pm)", [("at 12:30 pm", 1.1)]),
        ("(:1.5)", [(":1.5", 1.1)]),
        ("(red:nan)", [("red:nan", 1.1)]),
        ("(red:inf)", [("red:inf", 1.1)]),
        # Escapes.
        (r"\(red\)", [("(red)", 1.0)]),
        (r"(a \(b\):1.2)", [("a (b)", 1.2)]),
        (r"a\b", [(r"a\b", 1.0)]),
        # Square brackets are text, as in ComfyUI.
        ("[red] cat", [("[red] cat", 1.0)]),
        ("([red])", [("[red]", 1.1)]),
        # Empty groups vanish.
        ("a () b", [("a ", 1.0), (" b", 1.0)]),
        # Unbalanced parentheses, as ComfyUI's depth counting treats them.
        ("a (red cat", [("a ", 1.0), ("(red cat", 1.0)]),
        ("a) (b)", [("a) (b)", 1.0)]),
        ("a) (b) (c)", [("a) (b) (c)", 1.0)]),
        ("a) ((b))", [("a) (", 1.0), ("b", 1.1), (")", 1.0)]),
        ("embedding:my_style cat", [("embedding:my_style cat", 1.0)]),
    ],
)
def test_examples(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert pairs(prompt) == expected


plain_text = st.text(st.characters(blacklist_characters="()\\", blacklist_categories=("Cs",)), min_size=1)


@given(plain_text)
def test_text_without_syntax_is_one_segment_of_weight_one(text: str) -> None:
    assert parse_prompt_weights(text) == [Segment(text, 1.0)]


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_escaped_parentheses_are_plain_text(text: str) -> None:
    text = text.replace("\\", "/")  # keep backslashes only as escapes
    escaped = text.replace("(", "\\(").replace(")", "\\)")
    assert pairs(escaped) == ([(text, 1.0)] if text else [])


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_any_text_parses_to_finite_weights(text: str) -> None:
    for segment in parse_prompt_weights(text):
        assert segment.text
        assert math.isfinite(segment.weight)


# A model of well-formed prompts: a tree of text leaves and groups, rendered to a string, with the segments the
# syntax promises computed from the tree directly.


@dataclass(frozen=True)
class Group:
    children: tuple  # of str | Group
    weight: float | None  # explicit weight, or None for plain emphasis


leaf = st.text(st.characters(blacklist_characters="()\\:", blacklist_categories=("Cs",)), min_size=1, max_size=6)
explicit = st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0, 1.25, 1.3, 2.0, 10.0]))
trees = st.recursive(
    leaf,
    lambda inner: st.builds(Group, st.lists(inner, min_size=1, max_size=4).map(tuple), explicit),
    max_leaves=12,
)
prompts = st.lists(trees, max_size=5)


def render(node) -> str:
    if isinstance(node, str):
        return node
    body = "".join(render(child) for child in node.children)
    return f"({body}:{node.weight!r})" if node.weight is not None else f"({body})"


def expected_segments(nodes, weight: float) -> list[tuple[str, float]]:
    """Adjacent leaves at one level form one segment; a group weighs its contents and recurses."""
    out: list[tuple[str, float]] = []
    run = ""
    for node in nodes:
        if isinstance(node, str):
            run += node
            continue
        if run:
            out.append((run, weight))
            run = ""
        inner = node.weight if node.weight is not None else weight * EMPHASIS
        out += expected_segments(node.children, inner)
    if run:
        out.append((run, weight))
    return out


@given(prompts)
def test_parse_matches_the_model(nodes) -> None:
    assert pairs("".join(render(n) for n in nodes)) == expected_segments(nodes, 1.0)


emphasis_only = st.lists(
    st.recursive(leaf, lambda inner: st.builds(Group, st.lists(inner, min_size=1, max_size=4).map(tuple), st.none())),
    min_size=1,
    max_size=5,
)


@given(emphasis_only)
def test_wrapping_in_parentheses_multiplies_every_weight_by_emphasis(nodes) -> None:
    prompt = "".join(render(n) for n in nodes)
    assert pairs(f"({prompt})") == [(text, weight * EMPHASIS) for text, weight in pairs(prompt)]


@given(prompts)
def test_segment_texts_are_the_prompt_without_syntax(nodes) -> None:
    def text_of(node) -> str:
        return node if isinstance(node, str) else "".join(text_of(c) for c in node.children)

    assert "".join(s.text for s in parse_prompt_weights("".join(render(n) for n in nodes))) == "".join(
        text_of(n) for n in nodes
    )
