"""ControlNet nodes: load a ControlNet, attach it with a hint image to conditioning, and the Canny preprocessor
(whose edge detection is `diffusion.image_ops.canny_edges`, shared with the demo ControlNet's training).

A ControlNet rides with the conditioning into the sampler (`Conditioning.with_control`): the sampler runs it on
each step whose noise level lies in its [start_percent, end_percent] window and adds its residuals to the UNet's.
The hint image is resized to the latent's pixel size when sampling (center crop to the aspect ratio, then
nearest-exact, as ComfyUI does), so any image size works. Applying several ControlNets chains them: their
residuals add up.
"""
from __future__ import annotations

from typing import Any

from nodegraph.engine import Combo, Float, Folders, Input, Node, Output

from .loader_nodes import _file_fingerprint, _models


class ControlNetLoader(Node):
    """Load a ControlNet (an original-layout .safetensors file, or a diffusers ControlNetModel folder)."""

    display_name = "Load ControlNet Model"
    category = "loaders"
    control_net_name = Combo(_models("controlnet"), tooltip="The ControlNet to load, from the controlnet folder.")
    outputs = (Output("CONTROL_NET"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, control_net_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "controlnet", control_net_name)

    def execute(self, control_net_name: str) -> tuple[Any]:
        from ..diffusion import ops

        env = self.context.env
        return (ops.load_controlnet(self.context.runtime, env.model_path("controlnet", control_net_name)),)


def _strength() -> Float:
    return Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="How strongly the hint steers the image; 0 disables it.")


class ControlNetApply(Node):
    """Attach a ControlNet and its hint image to one conditioning (the old node: it also steers the negative
    prompt, unless that has ControlNets of its own). Prefer Apply ControlNet, which takes both conditionings and a
    start/end window."""

    display_name = "Apply ControlNet (OLD)"
    category = "conditioning/controlnet"
    deprecated = True
    conditioning = Input("CONDITIONING")
    control_net = Input("CONTROL_NET")
    image = Input("IMAGE", tooltip="The hint image (edges, depth, pose...), resized to the latent when sampling.")
    strength = _strength()
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: Any, control_net: Any, image: Any, strength: float) -> tuple[Any]:
        from ..diffusion.conditioning import ControlSpec, map_entries

        if strength == 0:
            return (conditioning,)
        spec = ControlSpec(control_net, image, strength, apply_to_uncond=True)
        return (map_entries(conditioning, lambda c: c.with_control(spec)),)


class ControlNetApplyAdvanced(Node):
    """Attach a ControlNet and its hint image to the positive and negative conditioning. start_percent and
    end_percent limit it to a part of the noise schedule (0 = the noisiest start, 1 = the end): e.g. 0 to 0.5 fixes
    the composition and leaves the details free."""

    display_name = "Apply ControlNet"
    category = "conditioning/controlnet"
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    control_net = Input("CONTROL_NET")
    image = Input("IMAGE", tooltip="The hint image (edges, depth, pose...), resized to the latent when sampling.")
    strength = _strength()
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001, tooltip="Where in the schedule the ControlNet starts.")
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001, tooltip="Where in the schedule the ControlNet stops.")
    vae = Input("VAE", optional=True,
                tooltip="Only for ControlNets that take a latent hint; SD1/SDXL ControlNets take pixels and ignore it.")
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def execute(self, positive, negative, control_net, image, strength, start_percent, end_percent, vae=None):
        from ..diffusion.conditioning import ControlSpec, map_entries

        if strength == 0:
            return (positive, negative)
        # One spec on both: the sampler then runs the ControlNet once per step for the batched uncond/cond halves.
        spec = ControlSpec(control_net, image, strength, start_percent, end_percent)
        return (map_entries(positive, lambda c: c.with_control(spec)),
                map_entries(negative, lambda c: c.with_control(spec)))


class Canny(Node):
    """Find the edges of an image (the hint for a canny ControlNet): white lines on black. Edges with a gradient
    above high_threshold are kept, and those above low_threshold where they continue a kept edge."""

    display_name = "Canny"
    category = "image/preprocessors"
    image = Input("IMAGE")
    low_threshold = Float(0.4, min=0.01, max=0.99, step=0.01)
    high_threshold = Float(0.8, min=0.01, max=0.99, step=0.01)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, low_threshold: float, high_threshold: float) -> tuple[Any]:
        from ..diffusion.image_ops import canny_edges  # torch and OpenCV load when a node runs

        return (canny_edges(image, low_threshold, high_threshold),)


NODES = [ControlNetLoader, ControlNetApply, ControlNetApplyAdvanced, Canny]
