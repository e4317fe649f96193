"""A test-only node pack for the server tests: previews with progress, a PNG-saving output node, a failing node.

Registered only in the registries the server tests build (see support.registry.make_registry).
"""
from __future__ import annotations

import itertools
from typing import Any

from nodegraph.engine import Float, Input, Int, Node, NodeResult, Output, String

_counter = itertools.count(1)


class TestPattern(Node):
    """A solid RGB test image (a PIL image), reporting `steps` progress events, each with a preview image."""

    category = "testing"
    width = Int(640, min=1, max=4096)
    height = Int(480, min=1, max=4096)
    steps = Int(3, min=0, max=1000)
    shade = Int(128, min=0, max=255)
    outputs = (Output("TEST_IMAGE", "image"),)

    def execute(self, width: int, height: int, steps: int, shade: int) -> tuple[Any]:
        from PIL import Image

        image = Image.new("RGB", (width, height), (shade, 255 - shade, 64))
        for step in range(steps):
            self.context.progress(step + 1, steps, preview=image)
        return (image,)


class SaveTestImage(Node):
    """Write the image as a PNG into the output folder and show it, the way ComfyUI's SaveImage answers."""

    category = "testing"
    output_node = True
    not_idempotent = True
    image = Input("TEST_IMAGE")
    filename_prefix = String("test")

    def execute(self, image: Any, filename_prefix: str) -> NodeResult:
        folder = self.context.env.output_dir
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{filename_prefix}_{next(_counter):05}_.png"
        image.save(folder / name, format="PNG")
        return NodeResult(ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


class Explode(Node):
    """Raise a ValueError with the given message: for execution_error tests."""

    category = "testing"
    output_node = True
    message = String("boom")
    value = Input("*", optional=True)

    def execute(self, message: str, value: Any = None) -> NodeResult:
        raise ValueError(message)


class OddOutput(Node):
    """An output node whose UI output holds a value JSON cannot represent (a complex number)."""

    category = "testing"
    output_node = True
    value = Int(1)

    def execute(self, value: int) -> NodeResult:
        return NodeResult(ui={"values": [complex(value, 2)]})


class Spin(Node):
    """Busy pure-Python work for `seconds` that never checks for interrupts: a node that holds the GIL as much as
    Python lets it, for the tests that the server keeps answering and can stop."""

    category = "testing"
    output_node = True
    not_idempotent = True
    seconds = Float(1.0, min=0.0, max=600.0)

    def execute(self, seconds: float) -> NodeResult:
        import time

        end = time.monotonic() + seconds
        total = 0
        while time.monotonic() < end:
            total += sum(i * i for i in range(1000))
        return NodeResult(ui={"text": [str(total % 10)]})


class BigInt(Node):
    """An integer of `digits` decimal digits (more than 4300 cannot even be printed by default)."""

    category = "testing"
    digits = Int(5000, min=1, max=10000)
    outputs = (Output("INT"),)

    def execute(self, digits: int) -> tuple[int]:
        return (10 ** (digits - 1),)


NODES = [TestPattern, SaveTestImage, Explode, OddOutput, Spin, BigInt]
