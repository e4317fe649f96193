"""Regular expressions that cannot freeze the server: a drop-in for the few `re` calls of the string nodes.

Python's `re` holds the GIL for a whole match, and a pattern like `(a+)+$` takes exponential time on a short text,
so one RegexMatch node could stop every other thread of the server, its event loop included, for hours. The
`regex` module (re-compatible in its default VERSION0 mode) releases the GIL while it matches (`concurrent=True`)
and stops after `timeout` seconds; a timeout becomes a ValueError that the engine reports against the node.
"""
from __future__ import annotations

from typing import Any, Iterator

import regex

TIMEOUT_S = 5.0  # per search / substitution; a pattern that needs longer on the given text is refused

error = regex.error
IGNORECASE = regex.IGNORECASE
MULTILINE = regex.MULTILINE
DOTALL = regex.DOTALL


def _too_slow(pattern: str) -> ValueError:
    return ValueError(f"the regular expression {pattern[:80]!r} took more than {TIMEOUT_S:g} s on this text "
                      "(catastrophic backtracking?); simplify it")


class Pattern:
    """A compiled pattern whose searches release the GIL and time out."""

    def __init__(self, compiled: Any):
        self._compiled = compiled
        self.groups = compiled.groups

    def search(self, string: str) -> Any:
        try:
            return self._compiled.search(string, concurrent=True, timeout=TIMEOUT_S)
        except TimeoutError:
            raise _too_slow(self._compiled.pattern) from None

    def finditer(self, string: str) -> Iterator[Any]:
        try:
            yield from self._compiled.finditer(string, concurrent=True, timeout=TIMEOUT_S)
        except TimeoutError:
            raise _too_slow(self._compiled.pattern) from None

    def sub(self, replace: str, string: str, count: int = 0) -> str:
        try:
            return self._compiled.sub(replace, string, count=count, concurrent=True, timeout=TIMEOUT_S)
        except TimeoutError:
            raise _too_slow(self._compiled.pattern) from None


def compile(pattern: str, flags: int = 0) -> Pattern:  # noqa: A001 - the `re` name, on purpose
    return Pattern(regex.compile(pattern, flags))


def search(pattern: str, string: str, flags: int = 0) -> Any:
    return compile(pattern, flags).search(string)
