"""CLIP vision nodes: CLIPVisionLoader and CLIPVisionEncode (ComfyUI's names, inputs and outputs).

Files come from `models/clip_vision` (.safetensors in transformers' CLIP vision layout; see diffusion/clip_vision.py).
"""
from __future__ import annotations

from typing import Any

from nodegraph.engine import Combo, Folders, Input, Node, Output

from .loader_nodes import _file_fingerprint, _models


class CLIPVisionLoader(Node):
    """Load a CLIP vision encoder (the image tower of CLIP)."""

    display_name = "Load CLIP Vision"
    category = "loaders"
    clip_name = Combo(_models("clip_vision"))
    outputs = (Output("CLIP_VISION"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, clip_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "clip_vision", clip_name)

    def execute(self, clip_name: str) -> tuple[Any]:
        from ..diffusion import ops

        env = self.context.env
        return (ops.load_clip_vision(self.context.runtime, env.model_path("clip_vision", clip_name)),)


class CLIPVisionEncode(Node):
    """Encode images with a CLIP vision model: center-cropped to a square ("center") or squashed ("none")."""

    display_name = "CLIP Vision Encode"
    category = "conditioning"
    clip_vision = Input("CLIP_VISION")
    image = Input("IMAGE")
    crop = Combo(["center", "none"])
    outputs = (Output("CLIP_VISION_OUTPUT"),)

    def execute(self, clip_vision: Any, image: Any, crop: str) -> tuple[Any]:
        from ..diffusion import ops

        return (ops.encode_clip_vision(self.context.runtime, clip_vision, image, crop == "center"),)


NODES = [CLIPVisionLoader, CLIPVisionEncode]
