"""Mask nodes: ComfyUI's core MASK nodes and LoadImageMask, with its names, inputs and defaults.

A MASK is a float32 CPU tensor [B, H, W] (a bare [H, W] from older nodes is accepted everywhere), 1 = selected.
"""
from __future__ import annotations

from typing import Any

from nodegraph.engine import MAX_RESOLUTION, Boolean, Combo, Float, Folders, Input, Int, Node, Output

from ..core.files import input_file, input_fingerprint
from .images import _input_images

MASK_OPERATIONS = ["multiply", "add", "subtract", "and", "or", "xor"]


def _batched(mask: Any) -> Any:
    """[H, W] or [B, H, W] (or [B, 1, H, W]) -> [B, H, W]."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


class LoadImageMask(Node):
    """Load one channel of an image from the input folder as a mask (alpha is inverted: transparent = 1)."""

    display_name = "Load Image (as Mask)"
    category = "mask"
    image = Combo(_input_images, strict=False, image_upload=True)
    channel = Combo(["alpha", "red", "green", "blue"])
    outputs = (Output("MASK"),)

    @classmethod
    def check_inputs(cls, env: Folders | None, image: str = "", **_: Any) -> dict[str, str] | None:
        return input_file(env, "image", image, "image")[1]

    @classmethod
    def fingerprint(cls, env: Folders | None, image: str = "", **_: Any) -> Any:
        return input_fingerprint(env, image)

    def execute(self, image: str, channel: str) -> tuple[Any]:
        from ..diffusion.image_ops import load_mask_channel

        return (load_mask_channel(self.context.env.annotated_path(image), channel),)


class MaskToImage(Node):
    """A mask as a grey image (the mask in all three channels)."""

    display_name = "Convert Mask to Image"
    category = "mask"
    mask = Input("MASK")
    outputs = (Output("IMAGE"),)

    def execute(self, mask: Any) -> tuple[Any]:
        return (mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3),)


class ImageToMask(Node):
    """One channel of an image as a mask."""

    display_name = "Convert Image to Mask"
    category = "mask"
    image = Input("IMAGE")
    channel = Combo(["red", "green", "blue", "alpha"])
    outputs = (Output("MASK"),)

    def execute(self, image: Any, channel: str) -> tuple[Any]:
        index = ["red", "green", "blue", "alpha"].index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"ImageToMask: the image has {image.shape[-1]} channels, so no {channel} channel")
        return (image[:, :, :, index],)


class SolidMask(Node):
    """A mask of one value everywhere."""

    display_name = "SolidMask"
    category = "mask"
    value = Float(1.0, min=0.0, max=1.0, step=0.01)
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    outputs = (Output("MASK"),)

    def execute(self, value: float, width: int, height: int) -> tuple[Any]:
        import torch

        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    """1 - mask."""

    display_name = "InvertMask"
    category = "mask"
    mask = Input("MASK")
    outputs = (Output("MASK"),)

    def execute(self, mask: Any) -> tuple[Any]:
        return (1.0 - mask,)


class CropMask(Node):
    """A rectangle of the mask (clipped to the mask)."""

    display_name = "CropMask"
    category = "mask"
    mask = Input("MASK")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    outputs = (Output("MASK"),)

    def execute(self, mask: Any, x: int, y: int, width: int, height: int) -> tuple[Any]:
        return (_batched(mask)[:, y : y + height, x : x + width],)


class MaskComposite(Node):
    """Combine `source` into `destination` at (x, y) with an operation; the result is clamped to 0..1. The logical
    operations round both masks to 0 / 1 first."""

    display_name = "MaskComposite"
    category = "mask"
    destination = Input("MASK")
    source = Input("MASK")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    operation = Combo(MASK_OPERATIONS)
    outputs = (Output("MASK"),)

    def execute(self, destination: Any, source: Any, x: int, y: int, operation: str) -> tuple[Any]:
        import torch

        out = _batched(destination).clone()
        source = _batched(source)
        right = min(x + source.shape[-1], out.shape[-1])
        bottom = min(y + source.shape[-2], out.shape[-2])
        if right > x and bottom > y:
            dst = out[:, y:bottom, x:right]
            src = source[:, : bottom - y, : right - x]
            if operation == "multiply":
                result = dst * src
            elif operation == "add":
                result = dst + src
            elif operation == "subtract":
                result = dst - src
            else:
                logical = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
                result = logical(dst.round().bool(), src.round().bool()).float()
            out[:, y:bottom, x:right] = result
        return (out.clamp(0.0, 1.0),)


class FeatherMask(Node):
    """Fade the mask towards each edge over the given number of pixels (linearly, from 1/n at the edge)."""

    display_name = "FeatherMask"
    category = "mask"
    mask = Input("MASK")
    left = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    top = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    right = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    bottom = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("MASK"),)

    def execute(self, mask: Any, left: int, top: int, right: int, bottom: int) -> tuple[Any]:
        out = _batched(mask).clone()
        height, width = out.shape[-2:]
        left, right, top, bottom = min(left, width), min(right, width), min(top, height), min(bottom, height)
        for i in range(left):
            out[:, :, i] *= (i + 1.0) / left
        # As in ComfyUI, the right and bottom edges are indexed -i: i = 0 scales column / row 0 (the left / top one)
        # by 1/n and the outermost right / bottom one gets 2/n. Kept, so that masks come out identical.
        for i in range(right):
            out[:, :, -i] *= (i + 1) / right
        for i in range(top):
            out[:, i, :] *= (i + 1) / top
        for i in range(bottom):
            out[:, -i, :] *= (i + 1) / bottom
        return (out,)


class GrowMask(Node):
    """Grow (positive) or shrink (negative) the mask by `expand` pixels: repeated 3x3 grey dilation / erosion, with a
    cross-shaped neighbourhood when `tapered_corners`."""

    display_name = "GrowMask"
    category = "mask"
    mask = Input("MASK")
    expand = Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)
    tapered_corners = Boolean(True)
    outputs = (Output("MASK"),)

    def execute(self, mask: Any, expand: int, tapered_corners: bool) -> tuple[Any]:
        from ..diffusion.image_ops import grow_mask

        return (grow_mask(_batched(mask), expand, tapered_corners),)


class ThresholdMask(Node):
    """1 where the mask is above `value`, else 0."""

    display_name = "ThresholdMask"
    category = "mask"
    mask = Input("MASK")
    value = Float(0.5, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MASK"),)

    def execute(self, mask: Any, value: float) -> tuple[Any]:
        return ((mask > value).float(),)


NODES = [
    LoadImageMask, MaskToImage, ImageToMask, SolidMask, InvertMask, CropMask, MaskComposite, FeatherMask, GrowMask,
    ThresholdMask,
]
