"""A test-only node pack for the server tests: previews with progress, a PNG-saving output node, a failing node.

Registered only in the registries the server tests build (see server_fixtures.make_registry).
"""
from __future__ import annotations

import itertools
from typing import Any

from nodegraph.engine import Input, Int, Node, NodeResult, Output, String

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


NODES = [TestPattern, SaveTestImage, Explode, OddOutput]
