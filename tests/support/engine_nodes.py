"""Node types and helpers for engine tests: counting executions, failing, waiting."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from nodegraph.engine import Float, Input, Int, Node, NodeRegistry, NodeResult, Output, String

from .registry import make_registry as _make_registry

CALLS: Counter[str] = Counter()
_lock = threading.Lock()


def count(node: Node) -> None:
    with _lock:
        CALLS[node.context.node_id] += 1


class Const(Node):
    """An integer source."""

    value = Int(0, min=-1000, max=1000)
    outputs = (Output("INT"),)

    def execute(self, value: int) -> tuple[int]:
        count(self)
        return (value,)


class Add(Node):
    a = Input("INT")
    b = Input("INT", optional=True)
    bias = Int(0, min=-1000, max=1000)
    outputs = (Output("INT"),)

    def execute(self, a: int, bias: int, b: int = 0) -> tuple[int]:
        count(self)
        return (a + b + bias,)


class Collect(Node):
    """An output node that records its value in the UI output."""

    output_node = True
    value = Input("INT")
    label = String("")

    def execute(self, value: int, label: str) -> NodeResult:
        count(self)
        return NodeResult(ui={"value": [value], "label": [label]})


class Fail(Node):
    value = Input("INT")
    outputs = (Output("INT"),)

    def execute(self, value: int) -> tuple[int]:
        count(self)
        raise RuntimeError(f"boom with {value}")


class Slow(Node):
    """Counts to `steps`, reporting progress each step (which is where interrupts are honoured)."""

    value = Input("INT")
    steps = Int(50, min=1, max=10000)
    delay = Float(0.01, min=0.0, max=1.0)
    outputs = (Output("INT"),)

    def execute(self, value: int, steps: int, delay: float) -> tuple[int]:
        count(self)
        for i in range(steps):
            time.sleep(delay)
            self.context.progress(i + 1, steps)
        return (value,)


class AsyncDouble(Node):
    value = Input("INT")
    outputs = (Output("INT"),)

    async def execute(self, value: int) -> tuple[int]:
        count(self)
        return (value * 2,)


class Text(Node):
    text = String("hi")
    outputs = (Output("STRING"),)

    def execute(self, text: str) -> tuple[str]:
        count(self)
        return (text,)


class Stamp(Node):
    """Depends on the outside world: its fingerprint is read from a mutable dict."""

    WORLD: dict[str, Any] = {"version": 1}
    outputs = (Output("INT"),)

    @classmethod
    def fingerprint(cls, env: Any, **constants: Any) -> Any:
        return cls.WORLD["version"]

    def execute(self) -> tuple[int]:
        count(self)
        return (self.WORLD["version"],)


TEST_NODES = [Const, Add, Collect, Fail, Slow, AsyncDouble, Text, Stamp]


def make_registry() -> NodeRegistry:
    """These test nodes alone (no built-in packs), as the pack "engine_fixtures"."""
    return _make_registry(builtin=False, packs={"engine_fixtures": TEST_NODES})
