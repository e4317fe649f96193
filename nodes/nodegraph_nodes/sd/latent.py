"""Latent nodes: empty latents, VAE encode / decode, latent upscaling.

A LATENT is ComfyUI's dict: {"samples": float32 CPU tensor [B, 4, H/8, W/8]} plus optional "noise_mask" and
"batch_index". An IMAGE is a float32 CPU tensor [B, H, W, 3] in 0..1.
"""
from __future__ import annotations

from typing import Any

from nodegraph.engine import MAX_RESOLUTION, Combo, Float, Folders, Input, Int, Node, Output

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROP_METHODS = ["disabled", "center"]


class EmptyLatentImage(Node):
    """A batch of empty latents to start text-to-image sampling from."""

    display_name = "Empty Latent Image"
    category = "latent"
    width = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The width of the images in pixels.")
    height = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The height of the images in pixels.")
    batch_size = Int(1, min=1, max=4096, tooltip="The number of images in the batch.")
    outputs = (Output("LATENT", tooltip="The empty latent image batch."),)

    @classmethod
    def check_inputs(cls, env: Folders | None, width: int = 512, height: int = 512, batch_size: int = 1, **_: Any):
        # 4 channels x (w/8) x (h/8) float32 per image; refuse what cannot fit in memory rather than crash.
        nbytes = batch_size * 4 * (width // 8) * (height // 8) * 4
        if nbytes > 8 << 30:
            return {"batch_size": f"{batch_size} latents of {width}x{height} need {nbytes >> 30} GiB; use fewer"}
        return None

    def execute(self, width: int, height: int, batch_size: int) -> tuple[dict[str, Any]]:
        import torch

        return ({"samples": torch.zeros(batch_size, 4, height // 8, width // 8)},)


class VAEEncode(Node):
    """Encode images into latents with the VAE (the image is cropped to a multiple of 8 pixels)."""

    display_name = "VAE Encode"
    category = "latent"
    pixels = Input("IMAGE")
    vae = Input("VAE")
    outputs = (Output("LATENT"),)

    def execute(self, pixels: Any, vae: Any) -> tuple[dict[str, Any]]:
        from ..diffusion import ops

        return ({"samples": ops.vae_encode(self.context.runtime, vae, pixels)},)


class VAEDecode(Node):
    """Decode latents into images with the VAE."""

    display_name = "VAE Decode"
    category = "latent"
    samples = Input("LATENT", tooltip="The latent to be decoded.")
    vae = Input("VAE", tooltip="The VAE model used for decoding the latent.")
    outputs = (Output("IMAGE", tooltip="The decoded image."),)

    def execute(self, samples: dict[str, Any], vae: Any) -> tuple[Any]:
        from ..diffusion import ops

        return (ops.vae_decode(self.context.runtime, vae, samples["samples"]),)


def _upscale(samples: Any, width: int, height: int, method: str, crop: str) -> Any:
    from ..diffusion.image_ops import resize_nchw

    return resize_nchw(samples, width, height, method, crop)


class LatentUpscale(Node):
    """Resize latents to a pixel size (divided by 8); 0 for one side keeps the aspect ratio."""

    display_name = "Upscale Latent"
    category = "latent"
    samples = Input("LATENT")
    upscale_method = Combo(UPSCALE_METHODS)
    width = Int(512, min=0, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=0, max=MAX_RESOLUTION, step=8)
    crop = Combo(CROP_METHODS)
    outputs = (Output("LATENT"),)

    def execute(self, samples: dict[str, Any], upscale_method: str, width: int, height: int, crop: str):
        x = samples["samples"]
        if width == 0 and height == 0:
            return ({**samples},)
        h, w = x.shape[-2:]
        # A side given as 0 follows the aspect ratio of the input; sides are at least 64 pixels.
        height = max(64, height) if height else max(64, round(h * width / w))
        width = max(64, width) if width else max(64, round(w * height / h))
        out = {k: v for k, v in samples.items() if k != "noise_mask"}
        out["samples"] = _upscale(x, width // 8, height // 8, upscale_method, crop)
        return (out,)


class LatentUpscaleBy(Node):
    """Resize latents by a factor."""

    display_name = "Upscale Latent By"
    category = "latent"
    samples = Input("LATENT")
    upscale_method = Combo(UPSCALE_METHODS)
    scale_by = Float(1.5, min=0.01, max=8.0, step=0.01)
    outputs = (Output("LATENT"),)

    def execute(self, samples: dict[str, Any], upscale_method: str, scale_by: float):
        x = samples["samples"]
        h, w = x.shape[-2:]
        out = {k: v for k, v in samples.items() if k != "noise_mask"}
        out["samples"] = _upscale(x, max(1, round(w * scale_by)), max(1, round(h * scale_by)), upscale_method, "disabled")
        return (out,)


NODES = [EmptyLatentImage, VAEEncode, VAEDecode, LatentUpscale, LatentUpscaleBy]
