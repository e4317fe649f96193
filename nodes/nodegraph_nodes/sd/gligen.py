"""GLIGEN: GLIGENLoader (models/gligen) and GLIGENTextBoxApply, ComfyUI's nodes.py names, inputs and defaults
(v0.3.75). The layers and how a box acts: diffusion/gligen.py."""
from __future__ import annotations

from typing import Any

from nodegraph.engine import MAX_RESOLUTION, Combo, Folders, Input, Int, Node, Output, String

from .loader_nodes import _file_fingerprint, _models


class GLIGENLoader(Node):
    """Load a GLIGEN model (gated self-attention layers for every transformer block of an SD1 / SD2 UNet and their
    box encoder) from models/gligen."""

    category = "loaders"
    gligen_name = Combo(_models("gligen"))
    outputs = (Output("GLIGEN"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, gligen_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "gligen", gligen_name)

    def execute(self, gligen_name: str) -> tuple[Any]:
        from ..diffusion.gligen import load_gligen

        path = self.context.env.model_path("gligen", gligen_name)
        return (load_gligen(self.context.runtime, path),)


class GLIGENTextBoxApply(Node):
    """Place the phrase `text` in the width x height box at (x, y) pixels: the sampler's UNet calls for this
    conditioning run GLIGEN's gated layers with the box (several boxes chain; the negative stays plain)."""

    category = "conditioning/gligen"
    conditioning_to = Input("CONDITIONING")
    clip = Input("CLIP")
    gligen_textbox_model = Input("GLIGEN")
    text = String(multiline=True, dynamic_prompts=True)
    width = Int(64, min=8, max=MAX_RESOLUTION, step=8)
    height = Int(64, min=8, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning_to, clip, gligen_textbox_model, text, width, height, x, y) -> tuple[Any]:
        from ..diffusion.gligen_boxes import apply_text_box

        return (apply_text_box(self.context.runtime, conditioning_to, clip, gligen_textbox_model, text, width,
                               height, x, y),)


NODES = [GLIGENLoader, GLIGENTextBoxApply]
