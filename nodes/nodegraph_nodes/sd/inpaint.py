"""Inpainting and outpainting nodes: SetLatentNoiseMask, VAEEncodeForInpaint, InpaintModelConditioning,
ImagePadForOutpaint and DifferentialDiffusion, with ComfyUI's names, inputs and defaults.

The sampler side (what a LATENT's `noise_mask` does in every sampler node, the extra input channels of inpainting
UNets) is in diffusion/inpaint.py.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from nodegraph.engine import MAX_RESOLUTION, Boolean, Float, Input, Int, Node, Output


class SetLatentNoiseMask(Node):
    """Resample only the masked part of a latent: samplers keep the rest (1 = resample, 0 = keep)."""

    display_name = "Set Latent Noise Mask"
    category = "latent/inpaint"
    samples = Input("LATENT")
    mask = Input("MASK")
    outputs = (Output("LATENT"),)

    def execute(self, samples: dict[str, Any], mask: Any) -> tuple[dict[str, Any]]:
        return ({**samples, "noise_mask": mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))},)


class VAEEncodeForInpaint(Node):
    """Encode an image for inpainting: the masked area is greyed out before encoding, and the mask, grown by
    `grow_mask_by` pixels, becomes the latent's noise mask."""

    display_name = "VAE Encode (for Inpainting)"
    category = "latent/inpaint"
    pixels = Input("IMAGE")
    vae = Input("VAE")
    mask = Input("MASK")
    grow_mask_by = Int(6, min=0, max=64, step=1)
    outputs = (Output("LATENT"),)

    def execute(self, pixels: Any, vae: Any, mask: Any, grow_mask_by: int) -> tuple[dict[str, Any]]:
        from ..diffusion import ops
        from ..diffusion.inpaint import crop_to_multiple, grey_out, grow_mask_box, pixel_mask

        pixels, m = crop_to_multiple(pixels, pixel_mask(mask, pixels))
        grown = grow_mask_box(m, grow_mask_by)
        samples = ops.vae_encode(self.context.runtime, vae, grey_out(pixels, m))
        return ({"samples": samples, "noise_mask": grown[:, :, : pixels.shape[1], : pixels.shape[2]].round()},)


class InpaintModelConditioning(Node):
    """Prepare an inpainting model's extra inputs: the image with the masked area greyed out (encoded) and the mask
    go into both conditionings; the latent is the encoded image, with the mask as noise mask when `noise_mask`."""

    display_name = "InpaintModelConditioning"
    category = "conditioning/inpaint"
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    vae = Input("VAE")
    pixels = Input("IMAGE")
    mask = Input("MASK")
    noise_mask = Boolean(True, tooltip="Add a noise mask to the latent so sampling will only happen within the mask. "
                         "Might improve results or completely break things depending on the model.")
    outputs = (
        Output("CONDITIONING", "positive"),
        Output("CONDITIONING", "negative"),
        Output("LATENT", "latent"),
    )

    def execute(self, positive: Any, negative: Any, vae: Any, pixels: Any, mask: Any, noise_mask: bool):
        from ..diffusion import ops
        from ..diffusion.inpaint import crop_to_multiple, grey_out, pixel_mask

        pixels, m = crop_to_multiple(pixels, pixel_mask(mask, pixels))
        concat_latent = ops.vae_encode(self.context.runtime, vae, grey_out(pixels, m))
        latent: dict[str, Any] = {"samples": ops.vae_encode(self.context.runtime, vae, pixels)}
        if noise_mask:
            latent["noise_mask"] = m
        from ..diffusion.conditioning import map_entries

        attach = lambda c: replace(c, concat_latent=concat_latent, concat_mask=m)  # noqa: E731
        return (map_entries(positive, attach), map_entries(negative, attach), latent)


class ImagePadForOutpaint(Node):
    """Pad an image with grey for outpainting; the mask covers the new border and fades `feathering` pixels into
    the image along the padded sides."""

    display_name = "Pad Image for Outpainting"
    category = "image"
    image = Input("IMAGE")
    left = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    top = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    right = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    bottom = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    feathering = Int(40, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("IMAGE"), Output("MASK"))

    def execute(self, image: Any, left: int, top: int, right: int, bottom: int, feathering: int):
        from ..diffusion.inpaint import pad_for_outpaint

        return pad_for_outpaint(image, left, top, right, bottom, feathering)


class DifferentialDiffusion(Node):
    """Make a soft noise mask act per step: each step repaints where the mask is at least the share of the schedule
    still ahead, so strongly masked areas change from the start and weakly masked ones only at the end."""

    display_name = "Differential Diffusion"
    category = "_for_testing"
    experimental = True
    model = Input("MODEL")
    strength = Float(1.0, min=0.0, max=1.0, step=0.01, optional=True)
    outputs = (Output("MODEL"),)

    def execute(self, model: Any, strength: float = 1.0) -> tuple[Any]:
        return (replace(model, differential_diffusion=float(strength)),)


NODES = [SetLatentNoiseMask, VAEEncodeForInpaint, InpaintModelConditioning, ImagePadForOutpaint, DifferentialDiffusion]
