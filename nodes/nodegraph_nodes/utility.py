"""Torch-free utility nodes: primitives, string formatting, arithmetic, and a text output node.

They make the engine and the server usable and testable without any model.
"""
from __future__ import annotations

import math
import operator
import re
import string
import time
from typing import Any

from nodegraph.engine import Boolean, Combo, Float, Folders, Input, Int, Node, NodeResult, Output, String
from nodegraph.engine.limits import Limits

INT_LIMIT = 2**63 - 1
MAX_TEXT_CHARS = Limits().max_string_chars


class PrimitiveInt(Node):
    """An integer value to feed into other nodes."""

    display_name = "Int"
    category = "utils/primitive"
    value = Int(0, min=-INT_LIMIT, max=INT_LIMIT, control_after_generate=True)
    outputs = (Output("INT"),)

    def execute(self, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    """A floating-point value to feed into other nodes."""

    display_name = "Float"
    category = "utils/primitive"
    value = Float(0.0, min=-1e300, max=1e300, step=0.01)
    outputs = (Output("FLOAT"),)

    def execute(self, value: float) -> tuple[float]:
        return (value,)


class PrimitiveString(Node):
    """A line of text to feed into other nodes."""

    display_name = "String"
    category = "utils/primitive"
    value = String("")
    outputs = (Output("STRING"),)

    def execute(self, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(Node):
    """A block of text (several lines) to feed into other nodes."""

    display_name = "String (Multiline)"
    category = "utils/primitive"
    value = String("", multiline=True)
    outputs = (Output("STRING"),)

    def execute(self, value: str) -> tuple[str]:
        return (value,)


class PrimitiveBoolean(Node):
    """A true / false value to feed into other nodes."""

    display_name = "Boolean"
    category = "utils/primitive"
    value = Boolean(False)
    outputs = (Output("BOOLEAN"),)

    def execute(self, value: bool) -> tuple[bool]:
        return (value,)


_INT_OPS = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "floor_divide": operator.floordiv,
    "modulo": operator.mod,
    "power": operator.pow,
    "min": min,
    "max": max,
}
_FLOAT_OPS = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
    "power": operator.pow,
    "min": min,
    "max": max,
}


class IntMath(Node):
    """Integer arithmetic: a <op> b. Division by zero is an error that names the node."""

    display_name = "Int Math"
    category = "utils/math"
    a = Int(0, min=-INT_LIMIT, max=INT_LIMIT)
    op = Combo(list(_INT_OPS), default="add")
    b = Int(0, min=-INT_LIMIT, max=INT_LIMIT)
    outputs = (Output("INT", "result"),)

    def execute(self, a: int, op: str, b: int) -> tuple[int]:
        if op in ("floor_divide", "modulo") and b == 0:
            raise ZeroDivisionError(f"{op} by zero: b must not be 0")
        if op == "power" and (b < 0 or b > 1024):
            raise ValueError(f"power: exponent {b} is outside 0..1024")
        if op == "power" and abs(a) > 1 and (abs(a).bit_length() - 1) * b > 63:
            # Refused before computing: a power tower is the cheapest way to make Python hold the GIL for minutes.
            raise OverflowError(f"power: {a} ** {b} has about {(abs(a).bit_length() - 1) * b} bits; Int Math results "
                                f"must fit in -{INT_LIMIT + 1}..{INT_LIMIT}")
        result = int(_INT_OPS[op](a, b))
        if not -INT_LIMIT - 1 <= result <= INT_LIMIT:
            raise OverflowError(f"{op}: the result has {result.bit_length()} bits; Int Math results must fit in "
                                f"-{INT_LIMIT + 1}..{INT_LIMIT}")
        return (result,)


class FloatMath(Node):
    """Floating-point arithmetic: a <op> b."""

    display_name = "Float Math"
    category = "utils/math"
    a = Float(0.0, min=-1e300, max=1e300)
    op = Combo(list(_FLOAT_OPS), default="add")
    b = Float(0.0, min=-1e300, max=1e300)
    outputs = (Output("FLOAT", "result"),)

    def execute(self, a: float, op: str, b: float) -> tuple[float]:
        if op == "divide" and b == 0:
            raise ZeroDivisionError("divide by zero: b must not be 0")
        value = float(_FLOAT_OPS[op](a, b))
        if not math.isfinite(value):
            raise OverflowError(f"{a} {op} {b} is not a finite number")
        return (value,)


class IntToFloat(Node):
    """Convert an integer to a float."""

    display_name = "Int to Float"
    category = "utils/math"
    value = Int(0, min=-INT_LIMIT, max=INT_LIMIT)
    outputs = (Output("FLOAT"),)

    def execute(self, value: int) -> tuple[float]:
        return (float(value),)


class FloatToInt(Node):
    """Convert a float to an integer (rounding to the nearest, or toward zero / floor / ceil)."""

    display_name = "Float to Int"
    category = "utils/math"
    value = Float(0.0, min=-1e18, max=1e18)
    mode = Combo(["round", "floor", "ceil", "truncate"], default="round")
    outputs = (Output("INT"),)

    def execute(self, value: float, mode: str) -> tuple[int]:
        fn = {"round": round, "floor": math.floor, "ceil": math.ceil, "truncate": math.trunc}[mode]
        return (int(fn(value)),)


class StringFormat(Node):
    """Fill a template: `{a}`, `{b}`, `{c}` are replaced by the inputs (e.g. "a photo of {a}, {b}")."""

    display_name = "Format String"
    category = "utils/string"
    template = String("{a}", multiline=True)
    a = String("", optional=True)
    b = String("", optional=True)
    c = String("", optional=True)
    outputs = (Output("STRING"),)

    @classmethod
    def check_inputs(cls, env: Folders | None, template: str = "", **_: Any) -> dict[str, str] | None:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as exc:
            return {"template": f"not a valid template: {exc}"}
        unknown = sorted(fields - {"a", "b", "c"})
        if unknown:
            return {"template": f"unknown placeholders {unknown}; use {{a}}, {{b}} and {{c}}"}
        return None

    def execute(self, template: str, a: str = "", b: str = "", c: str = "") -> tuple[str]:
        # A template repeating {a} k times multiplies the text by k in one step: measure before building it.
        values = {"a": a, "b": b, "c": c}
        size = 0
        for literal, name, spec, _ in string.Formatter().parse(template):
            size += len(literal) + (len(str(values.get(name, ""))) if name is not None else 0)
            if spec and "{" in spec:
                raise ValueError("nested fields in a format spec (such as {a:{b}}) are not supported")
            widths = [len(d) > 9 and MAX_TEXT_CHARS + 1 or int(d) for d in re.findall(r"\d+", spec or "")]
            size += max(widths, default=0)  # "{a:>1000000}" pads: the width counts too
        if size > MAX_TEXT_CHARS:
            raise ValueError(f"the formatted text would be about {size:,} characters, above the limit of "
                             f"{MAX_TEXT_CHARS:,}")
        return (template.format(a=a, b=b, c=c),)


class StringConcat(Node):
    """Join two strings with a separator."""

    display_name = "Concatenate Strings"
    category = "utils/string"
    first = String("")
    second = String("")
    separator = String(" ")
    outputs = (Output("STRING"),)

    def execute(self, first: str, second: str, separator: str) -> tuple[str]:
        return (f"{first}{separator}{second}",)


class ToString(Node):
    """Turn any value into its text form."""

    display_name = "To String"
    category = "utils/string"
    value = Input("*")
    outputs = (Output("STRING"),)

    def execute(self, value: Any) -> tuple[str]:
        return (str(value),)


class ShowText(Node):
    """Show a value as text in the editor and the run's outputs (an output node)."""

    display_name = "Show Text"
    category = "utils"
    output_node = True
    value = Input("*")

    def execute(self, value: Any) -> NodeResult:
        return NodeResult(ui={"text": [str(value)]})


class Sleep(Node):
    """Pass a value through after waiting, reporting progress: for testing interrupts and progress events."""

    display_name = "Sleep"
    category = "utils/debug"
    value = Input("*")
    seconds = Float(1.0, min=0.0, max=3600.0, step=0.1)
    outputs = (Output("*", "value"),)

    def execute(self, value: Any, seconds: float) -> tuple[Any]:
        steps = max(1, int(seconds / 0.01))
        for i in range(steps):
            time.sleep(seconds / steps)
            self.context.progress(i + 1, steps)
        return (value,)


NODES = [
    PrimitiveInt,
    PrimitiveFloat,
    PrimitiveString,
    PrimitiveStringMultiline,
    PrimitiveBoolean,
    IntMath,
    FloatMath,
    IntToFloat,
    FloatToInt,
    StringFormat,
    StringConcat,
    ToString,
    ShowText,
    Sleep,
]
