"""Upscale-model nodes: UpscaleModelLoader and ImageUpscaleWithModel (ComfyUI's names, inputs and outputs).

Models come from `models/upscale_models` and are recognised by spandrel (ESRGAN, Real-ESRGAN, SwinIR, ...);
published `.pth` pickles are read only through torch's weights-only unpickler (see diffusion/upscale.py).
"""
from __future__ import annotations

from typing import Any

from nodegraph.engine import Combo, Folders, Input, Node, Output

from .loader_nodes import _file_fingerprint, _models


class UpscaleModelLoader(Node):
    """Load an image upscale model (ESRGAN, Real-ESRGAN, SwinIR, ... as .safetensors or .pth)."""

    display_name = "Load Upscale Model"
    category = "loaders"
    model_name = Combo(_models("upscale_models"))
    outputs = (Output("UPSCALE_MODEL"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, model_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "upscale_models", model_name)

    def execute(self, model_name: str) -> tuple[Any]:
        from ..diffusion import ops

        env = self.context.env
        return (ops.load_upscale_model(self.context.runtime, env.model_path("upscale_models", model_name)),)


class ImageUpscaleWithModel(Node):
    """Upscale images with an upscale model, in overlapping tiles of 512 pixels (smaller if memory runs out)."""

    display_name = "Upscale Image (using Model)"
    category = "image/upscaling"
    upscale_model = Input("UPSCALE_MODEL")
    image = Input("IMAGE")
    outputs = (Output("IMAGE"),)

    def execute(self, upscale_model: Any, image: Any) -> tuple[Any]:
        from ..diffusion import ops

        return (ops.upscale_image(upscale_model, image, self.context),)


NODES = [UpscaleModelLoader, ImageUpscaleWithModel]
