"""The widgets of an editor node: how ``widgets_values`` maps onto a node definition's inputs.

The editor saves a node's widget values by position (a dict keyed by input name in newer files). The position of
each value follows the node definition (``object_info``): widget inputs of the required, then the optional
section, each in ``input_order``, interleaved with frontend-only widgets that never reach a prompt (the
``control_after_generate`` combo after inputs that declare it, the upload button after the required inputs of
nodes with an ``image_upload`` input). Both directions of conversion use this: ``uiformat`` (editor -> prompt)
reads widget values, ``uilayout`` (prompt -> editor) writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

NodeInfo = Callable[[str], dict | None]
"""Returns the ``object_info`` record of a node class, or None when that class is not installed."""

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
# Old frontends added the control widget by input name, before object_info declared it.
LEGACY_SEED_NAMES = frozenset({"seed", "noise_seed"})

MISSING = object()  # "no value": a widget without a default, or a value the file does not hold


@dataclass(frozen=True)
class WidgetSlot:
    """One entry of ``widgets_values``: an input's value, or a frontend-only value to skip.

    ``kind`` is "input", "control" (control_after_generate), "legacy_control" (present only when the value
    is a control word: old files saved it after seeds without object_info declaring it) or "upload".
    """

    kind: str
    name: str | None = None


def split_spec(spec: Any) -> tuple[Any, dict]:
    """``[TYPE]`` or ``[TYPE, options]`` -> (TYPE, options)."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return None, {}
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0], options


def is_widget(spec: Any) -> bool:
    """A widget input: a primitive or a choice list, not forced to be a socket."""
    kind, options = split_spec(spec)
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def ordered_inputs(info: dict, section: str) -> Iterator[tuple[str, Any]]:
    """The (name, spec) pairs of one input section, in ``input_order`` (declaration order without it)."""
    specs = (info.get("input") or {}).get(section) or {}
    order = (info.get("input_order") or {}).get(section)
    for name in order if order is not None else specs:
        if name in specs:
            yield name, specs[name]


def widget_layout(info: dict) -> list[WidgetSlot]:
    """The sequence the editor writes ``widgets_values`` in, for one node definition."""
    slots: list[WidgetSlot] = []
    for section in ("required", "optional"):
        has_upload = False
        for name, spec in ordered_inputs(info, section):
            kind, options = split_spec(spec)
            has_upload = has_upload or bool(options.get("image_upload"))
            if not is_widget(spec):
                continue
            slots.append(WidgetSlot("input", name))
            if options.get("control_after_generate"):
                slots.append(WidgetSlot("control"))
            elif kind == "INT" and name in LEGACY_SEED_NAMES:
                slots.append(WidgetSlot("legacy_control"))
        # The frontend adds the upload button as one more required input, after the declared ones.
        if section == "required" and has_upload:
            slots.append(WidgetSlot("upload"))
    return slots


def widget_default(spec: Any) -> Any:
    """The value a freshly created widget holds (used when ``widgets_values`` is shorter than the widgets)."""
    kind, options = split_spec(spec)
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0] if kind else MISSING
    if kind == "COMBO":
        choices = options.get("options") or []
        return choices[0] if choices else MISSING
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind, MISSING)


def widget_specs(info: dict) -> dict[str, Any]:
    """Name -> spec of every widget input of a definition."""
    return {
        name: spec
        for section in ("required", "optional")
        for name, spec in ordered_inputs(info, section)
        if is_widget(spec)
    }


def widget_inputs(info: dict, widgets_values: Any) -> dict[str, Any]:
    """Map a node's saved ``widgets_values`` (list or dict) onto its widget inputs, by name.

    Frontend-only values (seed control, upload button) are skipped; widgets the file has no value for keep
    the value a new widget would have.
    """
    specs = widget_specs(info)
    values: dict[str, Any] = {}
    if isinstance(widgets_values, dict):
        values = {name: widgets_values[name] for name in specs if name in widgets_values}
    elif isinstance(widgets_values, list):
        position = 0
        for slot in widget_layout(info):
            if position >= len(widgets_values):
                break
            value = widgets_values[position]
            if slot.kind == "legacy_control" and not (isinstance(value, str) and value in CONTROL_VALUES):
                continue
            position += 1
            if slot.kind == "input":
                values[slot.name] = value
    for name, spec in specs.items():
        if name not in values:
            default = widget_default(spec)
            if default is not MISSING:
                values[name] = default
    return {name: values[name] for name in specs if name in values}
