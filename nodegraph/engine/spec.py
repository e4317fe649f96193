"""Typed declarations of a node's inputs and outputs.

A node class lists its inputs as class attributes (`seed = Int(0, min=0)`) and its outputs as a tuple of `Output`.
From these declarations alone the engine derives validation (coercion, ranges, choices, link types), ComfyUI's
`object_info` record and the editor's widgets, so the three can never disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from .folders import Folders

MAX_RESOLUTION = 16384
MAX_SEED = 0xFFFFFFFFFFFFFFFF

_MISSING: Any = object()


class InputError(ValueError):
    """A literal value does not fit its input; `type` is ComfyUI's error type for it."""

    def __init__(self, type: str, message: str, details: str):
        super().__init__(details)
        self.type = type
        self.message = message
        self.details = details


class Input:
    """An input of a node. `type` is a link type (MODEL, LATENT, ...) or a primitive handled by a subclass.

    Link inputs take a connection from another node's output of a compatible type. Primitive inputs (Int, Float,
    String, Boolean, Combo) take a literal value, shown as a widget in the editor, or a link of the same type.
    """

    primitive = False

    def __init__(
        self,
        type: str,
        *,
        default: Any = _MISSING,
        optional: bool = False,
        tooltip: str | None = None,
        display_name: str | None = None,
        force_input: bool = False,
        advanced: bool = False,
    ):
        self.type = type
        self.default = default
        self.optional = optional
        self.tooltip = tooltip
        self.display_name = display_name
        self.force_input = force_input
        self.advanced = advanced
        self.name = ""  # set by __set_name__ when the node class is created

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    # --- declaration -> data -------------------------------------------------------------------------------------

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    @property
    def is_widget(self) -> bool:
        """True when the editor shows a widget for it (a literal), False when it only takes links."""
        return self.primitive and not self.force_input

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.has_default:
            opts["default"] = self.default
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        if self.display_name:
            opts["display_name"] = self.display_name
        if self.force_input:
            opts["forceInput"] = True
        if self.advanced:
            opts["advanced"] = True
        return opts

    def object_info(self, env: Folders | None = None) -> list[Any]:
        """ComfyUI's input spec: `[TYPE]` or `[TYPE, options]`."""
        opts = self.options()
        return [self.type, opts] if opts else [self.type]

    # --- validation ----------------------------------------------------------------------------------------------

    def accepts_link_from(self, output_type: str) -> bool:
        """Whether an output of `output_type` may feed this input (ComfyUI's rule: equal, '*', or comma unions)."""
        return types_compatible(output_type, self.type)

    def coerce(self, value: Any, env: Folders | None = None) -> Any:
        """Turn a literal into this input's value, or raise InputError. Link-only inputs take no literals."""
        raise InputError(
            "invalid_input_type",
            f"Input '{self.name}' takes a link",
            f"{self.name}: expected a link [node_id, output_index] to a {self.type} output, got the literal {value!r}",
        )


def types_compatible(output_type: str, input_type: str) -> bool:
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    received = {t.strip() for t in str(output_type).split(",")}
    expected = {t.strip() for t in str(input_type).split(",")}
    return bool(received & expected)


class _Number(Input):
    """What Int and Float share: a range, a step and how the editor shows them."""

    primitive = True

    def __init__(self, type: str, default: Any, min: Any, max: Any, step: Any, display: str | None, **kwargs: Any):
        super().__init__(type, default=default, **kwargs)
        self.min, self.max, self.step, self.display = min, max, step, display

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if self.min is not None:
            opts["min"] = self.min
        if self.max is not None:
            opts["max"] = self.max
        opts["step"] = self.step
        if self.display:
            opts["display"] = self.display
        return opts


class Int(_Number):
    def __init__(
        self,
        default: int = 0,
        *,
        min: int | None = None,
        max: int | None = None,
        step: int = 1,
        control_after_generate: bool = False,
        display: str | None = None,
        **kwargs: Any,
    ):
        super().__init__("INT", default, min, max, step, display, **kwargs)
        self.control_after_generate = control_after_generate

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if self.control_after_generate:
            opts["control_after_generate"] = True
        return opts

    def coerce(self, value: Any, env: Folders | None = None) -> int:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            try:
                value = int(value.strip(), 0)
            except ValueError:
                pass
        if not isinstance(value, int):
            raise InputError(
                "invalid_input_type",
                "Failed to convert an input value to a INT value",
                f"{self.name}: expected an integer, got {value!r}",
            )
        _check_range(self, value)
        return value


class Float(_Number):
    def __init__(
        self,
        default: float = 0.0,
        *,
        min: float | None = None,
        max: float | None = None,
        step: float = 0.01,
        round: float | bool | None = None,
        display: str | None = None,
        **kwargs: Any,
    ):
        super().__init__("FLOAT", float(default), min, max, step, display, **kwargs)
        self.round = round

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if self.round is not None:
            opts["round"] = self.round
        return opts

    def coerce(self, value: Any, env: Folders | None = None) -> float:
        try:
            if isinstance(value, (list, dict, tuple)) or value is None:
                raise TypeError
            result = float(value)
        except (TypeError, ValueError):
            raise InputError(
                "invalid_input_type",
                "Failed to convert an input value to a FLOAT value",
                f"{self.name}: expected a number, got {value!r}",
            ) from None
        if not math.isfinite(result):
            raise InputError(
                "invalid_input_type",
                "Failed to convert an input value to a FLOAT value",
                f"{self.name}: expected a finite number, got {value!r}",
            )
        _check_range(self, result)
        return result


class String(Input):
    primitive = True

    def __init__(self, default: str = "", *, multiline: bool = False, dynamic_prompts: bool = False, **kwargs: Any):
        super().__init__("STRING", default=default, **kwargs)
        self.multiline = multiline
        self.dynamic_prompts = dynamic_prompts

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if self.multiline:
            opts["multiline"] = True
        if self.dynamic_prompts:
            opts["dynamicPrompts"] = True
        return opts

    def coerce(self, value: Any, env: Folders | None = None) -> str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise InputError(
            "invalid_input_type",
            "Failed to convert an input value to a STRING value",
            f"{self.name}: expected a string, got {value!r}",
        )


class Boolean(Input):
    primitive = True

    def __init__(self, default: bool = False, *, label_on: str | None = None, label_off: str | None = None, **kwargs):
        super().__init__("BOOLEAN", default=default, **kwargs)
        self.label_on, self.label_off = label_on, label_off

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if self.label_on:
            opts["label_on"] = self.label_on
        if self.label_off:
            opts["label_off"] = self.label_off
        return opts

    def coerce(self, value: Any, env: Folders | None = None) -> bool:
        # Unlike bool("false") == True, only clear spellings are accepted.
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise InputError(
            "invalid_input_type",
            "Failed to convert an input value to a BOOLEAN value",
            f"{self.name}: expected true or false, got {value!r}",
        )


# A choices function gets the folders validation runs with (None when there are none, e.g. `nodegraph nodes`).
Choices = Sequence[str] | Callable[["Folders | None"], Sequence[str]]


class Combo(Input):
    """A choice from a list. `choices` is a list, or a function of the environment (e.g. files in a folder).

    `strict=False` skips the membership check for nodes that validate the value themselves (LoadImage accepts
    `name [input]`-style annotated names that are not listed verbatim).
    """

    primitive = True

    def __init__(
        self, choices: Choices, default: str | None = None, *, strict: bool = True, image_upload: bool = False, **kw
    ):
        super().__init__("COMBO", default=_MISSING if default is None else default, **kw)
        self._choices = choices
        self.strict = strict
        self.image_upload = image_upload

    def choices(self, env: Folders | None = None) -> list[str]:
        return list(self._choices(env) if callable(self._choices) else self._choices)

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if self.image_upload:
            opts["image_upload"] = True
        return opts

    def object_info(self, env: Folders | None = None) -> list[Any]:
        # The legacy `[[choices...], options]` form: every ComfyUI client and script version understands it.
        choices = self.choices(env)
        opts = self.options()
        if "default" not in opts and choices:
            opts["default"] = choices[0]
        return [choices, opts] if opts else [choices]

    def accepts_link_from(self, output_type: str) -> bool:
        return output_type in ("COMBO", "STRING", "*")

    def coerce(self, value: Any, env: Folders | None = None) -> str:
        if not isinstance(value, str):
            raise InputError(
                "invalid_input_type",
                "Failed to convert an input value to a COMBO value",
                f"{self.name}: expected one of the listed names, got {value!r}",
            )
        if self.strict:
            choices = self.choices(env)
            if value not in choices:
                shown = f"(list of length {len(choices)})" if len(choices) > 20 else repr(choices)
                raise InputError("value_not_in_list", "Value not in list", f"{self.name}: {value!r} not in {shown}")
        return value


def _check_range(spec: _Number, value: float) -> None:
    if spec.min is not None and value < spec.min:
        raise InputError(
            "value_smaller_than_min",
            "Value smaller than min",
            f"{spec.name}: {value} is smaller than the minimum {spec.min}",
        )
    if spec.max is not None and value > spec.max:
        raise InputError(
            "value_bigger_than_max",
            "Value bigger than max",
            f"{spec.name}: {value} is bigger than the maximum {spec.max}",
        )


@dataclass(frozen=True)
class Output:
    """An output of a node: its link type, the name the editor shows, and whether it is a list."""

    type: str
    name: str | None = None
    tooltip: str | None = None
    is_list: bool = False

    @property
    def label(self) -> str:
        return self.name or self.type
