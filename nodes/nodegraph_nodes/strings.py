"""ComfyUI's core string nodes (utils/string) and PreviewAny: torch-free text utilities.

Names, inputs, defaults and outputs follow ComfyUI's `nodes_string.py` and `nodes_preview_any.py` so workflows that
use them run unchanged. Regex nodes treat an invalid pattern as "no match" (an empty string / False), as ComfyUI
does, except RegexReplace, which reports it as an error naming the pattern.
"""
from __future__ import annotations

import json
from typing import Any

from nodegraph.engine import Boolean, Combo, Input, Int, Node, NodeResult, Output, String

from . import safe_regex as re  # `re`'s calls, but releasing the GIL and with a timeout (see safe_regex)

INT_LIMIT = 2**63 - 1


def _text(default: str = "") -> String:
    return String(default, multiline=True)


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    flags = 0
    if case_insensitive:
        flags |= re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    return flags


class StringConcatenate(Node):
    """Join two strings with a delimiter between them."""

    display_name = "Concatenate"
    category = "utils/string"
    string_a = _text()
    string_b = _text()
    delimiter = String("")
    outputs = (Output("STRING"),)

    def execute(self, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (f"{string_a}{delimiter}{string_b}",)


class StringSubstring(Node):
    """The part of a string from `start` up to (not including) `end`; Python slicing, so negative counts back."""

    display_name = "Substring"
    category = "utils/string"
    string = _text()
    start = Int(0, min=-INT_LIMIT, max=INT_LIMIT)
    end = Int(0, min=-INT_LIMIT, max=INT_LIMIT)
    outputs = (Output("STRING"),)

    def execute(self, string: str, start: int, end: int) -> tuple[str]:
        return (string[start:end],)


class StringLength(Node):
    """The number of characters in a string."""

    display_name = "Length"
    category = "utils/string"
    string = _text()
    outputs = (Output("INT", "length"),)

    def execute(self, string: str) -> tuple[int]:
        return (len(string),)


_CASES = {
    "UPPERCASE": str.upper,
    "lowercase": str.lower,
    "Capitalize": str.capitalize,
    "Title Case": str.title,
}


class CaseConverter(Node):
    """Change a string's letter case."""

    display_name = "Case Converter"
    category = "utils/string"
    string = _text()
    mode = Combo(list(_CASES))
    outputs = (Output("STRING"),)

    def execute(self, string: str, mode: str) -> tuple[str]:
        return (_CASES[mode](string),)


_TRIMS = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}


class StringTrim(Node):
    """Remove whitespace from both ends of a string, or only its start or end."""

    display_name = "Trim"
    category = "utils/string"
    string = _text()
    mode = Combo(list(_TRIMS))
    outputs = (Output("STRING"),)

    def execute(self, string: str, mode: str) -> tuple[str]:
        return (_TRIMS[mode](string),)


class StringReplace(Node):
    """Replace every occurrence of `find` with `replace` (plain text, not a pattern)."""

    display_name = "Replace"
    category = "utils/string"
    string = _text()
    find = _text()
    replace = _text()
    outputs = (Output("STRING"),)

    def execute(self, string: str, find: str, replace: str) -> tuple[str]:
        return (string.replace(find, replace),)


class StringContains(Node):
    """Whether `substring` occurs in `string`."""

    display_name = "Contains"
    category = "utils/string"
    string = _text()
    substring = _text()
    case_sensitive = Boolean(True)
    outputs = (Output("BOOLEAN", "contains"),)

    def execute(self, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


class StringCompare(Node):
    """Whether string_a starts with, ends with, or equals string_b."""

    display_name = "Compare"
    category = "utils/string"
    string_a = _text()
    string_b = _text()
    mode = Combo(["Starts With", "Ends With", "Equal"])
    case_sensitive = Boolean(True)
    outputs = (Output("BOOLEAN"),)

    def execute(self, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        if mode == "Starts With":
            return (string_a.startswith(string_b),)
        if mode == "Ends With":
            return (string_a.endswith(string_b),)
        return (string_a == string_b,)


class RegexMatch(Node):
    """Whether a regular expression matches anywhere in the string (an invalid pattern matches nothing)."""

    display_name = "Regex Match"
    category = "utils/string"
    string = _text()
    regex_pattern = _text()
    case_insensitive = Boolean(True)
    multiline = Boolean(False)
    dotall = Boolean(False)
    outputs = (Output("BOOLEAN", "matches"),)

    def execute(self, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool, dotall: bool):
        try:
            return (re.search(regex_pattern, string, _flags(case_insensitive, multiline, dotall)) is not None,)
        except re.error:
            return (False,)


class RegexExtract(Node):
    """Text a regular expression finds: the first match, all matches (one per line), the first match's group
    `group_index`, or that group of every match (one per line). Nothing found, or an invalid pattern, gives ""."""

    display_name = "Regex Extract"
    category = "utils/string"
    string = _text()
    regex_pattern = _text()
    mode = Combo(["First Match", "All Matches", "First Group", "All Groups"])
    case_insensitive = Boolean(True)
    multiline = Boolean(False)
    dotall = Boolean(False)
    group_index = Int(1, min=0, max=100)
    outputs = (Output("STRING"),)

    def execute(self, string, regex_pattern, mode, case_insensitive, multiline, dotall, group_index) -> tuple[str]:
        try:
            pattern = re.compile(regex_pattern, _flags(case_insensitive, multiline, dotall))
        except re.error:
            return ("",)
        if mode == "First Match":
            found = pattern.search(string)
            return (found.group(0) if found else "",)
        if mode == "All Matches":
            # like re.findall: the whole match without groups, else the first group of each match
            parts = [m.group(1) if pattern.groups else m.group(0) for m in pattern.finditer(string)]
            return ("\n".join(p or "" for p in parts),)
        if mode == "First Group":
            found = pattern.search(string)
            if found and pattern.groups >= group_index:
                return (found.group(group_index) or "",)
            return ("",)
        parts = [m.group(group_index) or "" for m in pattern.finditer(string) if 0 < len(m.groups()) >= group_index]
        return ("\n".join(parts),)


class RegexReplace(Node):
    """Replace what a regular expression matches (`\\1` in `replace` refers to a group); count 0 replaces all."""

    display_name = "Regex Replace"
    category = "utils/string"
    string = _text()
    regex_pattern = _text()
    replace = _text()
    case_insensitive = Boolean(True, optional=True)
    multiline = Boolean(False, optional=True)
    dotall = Boolean(False, optional=True,
                     tooltip="When enabled, '.' also matches newline characters.")
    count = Int(0, min=0, max=100, optional=True,
                tooltip="The most replacements to make; 0 replaces every match.")
    outputs = (Output("STRING"),)

    def execute(self, string, regex_pattern, replace, case_insensitive=True, multiline=False, dotall=False, count=0):
        try:
            pattern = re.compile(regex_pattern, _flags(case_insensitive, multiline, dotall))
            return (pattern.sub(replace, string, count=count),)
        except re.error as exc:
            raise ValueError(f"regex_pattern {regex_pattern!r} or replace {replace!r} is invalid: {exc}") from None


def preview_text(value: Any) -> str:
    """How PreviewAny shows a value: strings as they are, numbers and booleans with str(), other values as
    indented JSON when they serialise, else their str() form."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        pass
    try:
        return str(value)
    except Exception:  # a value whose __str__ fails must not fail the run
        return "source exists, but could not be serialized."


class PreviewAny(Node):
    """Show any value as text in the editor, and pass that text on."""

    display_name = "Preview as Text"
    category = "utilities"
    output_node = True
    source = Input("*")
    outputs = (Output("STRING"),)

    def execute(self, source: Any = None) -> NodeResult:
        text = preview_text(source)
        return NodeResult(outputs=(text,), ui={"text": [text]})


NODES = [
    StringConcatenate,
    StringSubstring,
    StringLength,
    CaseConverter,
    StringTrim,
    StringReplace,
    StringContains,
    StringCompare,
    RegexMatch,
    RegexExtract,
    RegexReplace,
    PreviewAny,
]
