"""Inpainting inside the sampler: the latent's noise mask, inpainting UNets' extra input channels, and Differential
Diffusion's per-step mask.

What ComfyUI does, and so what this module does (its KSamplerX0Inpaint and the inpainting model's concat inputs):

* A LATENT may carry `noise_mask` ([B, H, W] or [H, W], 1 = repaint, 0 = keep, values in between blend). It is
  resized bilinearly to the latent's size and repeated over channels and batch (`latent_mask`).
* Around every model evaluation at noise level sigma, the sampler's x is first blended with the original latent
  noised to that level: x' = x * m + (latent + noise * sigma) * (1 - m), and the denoised prediction is blended
  with the original latent: x0' = x0 * m + latent * (1 - m). The noise is the sampler's own initial noise (zero when
  add_noise is off). So a schedule that ends at sigma 0 returns the original latent where m = 0, up to float
  rounding (the last step lands on the blended prediction); a schedule cut early keeps the leftover noise there too.
* A model with a `mask_function` (DifferentialDiffusion) turns the mask into a per-step one before blending.
* An inpainting UNet (in_channels = latent channels + 5) takes, after the noisy latent, one mask channel and the
  VAE latent of the masked image. They come from the conditioning when InpaintModelConditioning set them
  (`concat_latent`, `concat_mask`), else from the noise mask and the latent being sampled, else a full mask over a
  blank image (the values "zero in pixel space" has in SD's latent space, as ComfyUI uses).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from .conditioning import Conditioning

# An SD-family VAE's (scaled) latent for an all-grey image: what an inpainting UNet is given as "masked image" when
# nothing is masked. These are the constants ComfyUI uses for every SD-family inpainting model.
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)

# samplers that ComfyUI runs with fresh noise (drawn from seed + 1) for the kept area instead of the sampling noise
RANDOM_INPAINT_NOISE = frozenset({"ddim"})

# (sigma [B], mask [B, C, h, w]) -> the mask to use at this evaluation
MaskFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def latent_mask(mask: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """A MASK ([H, W], [B, H, W] or [B, 1, H, W]) as a float mask of `shape` [B, C, h, w]: bilinear resize to
    (h, w), repeated over the channels and cycled over the batch."""
    batch, channels, height, width = shape
    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)
    m = m.expand(-1, channels, -1, -1)
    if m.shape[0] != batch:
        m = m.repeat(-(-batch // m.shape[0]), 1, 1, 1)[:batch]
    return m.contiguous()


class InpaintDenoiser:
    """Wraps a denoiser D(x, sigma) so that only the masked part of the latent is resampled (see module doc)."""

    def __init__(
        self,
        denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        latent: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor,
        mask_function: MaskFunction | None = None,
    ) -> None:
        self.denoiser = denoiser
        self.latent = latent
        self.noise = noise
        self.mask = mask
        self.mask_function = mask_function

    def __getattr__(self, name: str) -> Any:  # samplers may read the inner denoiser's attributes (model_sampling)
        return getattr(self.denoiser, name)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        mask = self.mask if self.mask_function is None else self.mask_function(sigma, self.mask)
        keep = 1.0 - mask
        per_sample = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        x = x * mask + (self.latent + self.noise * per_sample) * keep
        out = self.denoiser(x, sigma)
        return out * mask + self.latent * keep


def differential_mask_function(model_sampling: Any, sigmas: torch.Tensor, strength: float = 1.0) -> MaskFunction:
    """Differential Diffusion's mask function for a run over `sigmas`: at each step the mask becomes binary, 1 where
    the soft mask is at least the fraction of the schedule (in timesteps) still ahead, so weakly masked areas join in
    late; `strength` < 1 mixes the soft mask back in."""
    sigma_to = max(float(sigmas[-1]), model_sampling.sigma_min)
    ts_from = float(model_sampling.timestep(sigmas[0].reshape(1)))
    ts_to = float(model_sampling.timestep(torch.tensor([sigma_to])))

    def mask_function(sigma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        current = float(model_sampling.timestep(sigma[:1].to("cpu")))
        threshold = (current - ts_to) / (ts_from - ts_to)
        binary = (mask >= threshold).to(mask.dtype)
        if strength and strength < 1:
            return strength * binary + (1 - strength) * mask
        return binary

    return mask_function


def scale_concat(cond: Conditioning | None, latent_scale: float) -> Conditioning | None:
    """The conditioning with its inpainting latent moved from raw VAE latents into the UNet's latent space."""
    if cond is None or cond.concat_latent is None:
        return cond
    return replace(cond, concat_latent=cond.concat_latent * latent_scale)


def concat_channels(
    cond: Conditioning,
    extra: int,
    latent: torch.Tensor,
    noise_mask: torch.Tensor | None,
) -> torch.Tensor:
    """The extra UNet input channels [B, extra, h, w] of an inpainting model for one conditioning: mask, then the
    masked image's latent (both in the UNet's latent space, resized to the latent when needed)."""
    batch, channels, height, width = latent.shape
    if extra != channels + 1:
        raise ValueError(
            f"the UNet takes {channels + extra} input channels; an inpainting UNet takes {2 * channels + 1} "
            f"({channels} latent + 1 mask + {channels} masked image); other layouts are not supported"
        )
    mask = cond.concat_mask if cond.concat_mask is not None else noise_mask
    image = cond.concat_latent
    if image is None:
        image = latent
    elif image.shape[-2:] != (height, width):
        image = F.interpolate(image.float(), size=(height, width), mode="bilinear", align_corners=False)
    if mask is None:
        m = torch.ones(batch, 1, height, width)
        blank = torch.tensor(BLANK_INPAINT_LATENT[:channels]).reshape(1, -1, 1, 1)
        image = blank.expand(batch, -1, height, width)
    else:
        m = latent_mask(mask, (batch, 1, height, width)).round()
    image = image.float()
    if image.shape[0] != batch:
        image = image.repeat(-(-batch // image.shape[0]), 1, 1, 1)[:batch]
    return torch.cat([m, image], dim=1)


# --- pixel-space preparation (VAEEncodeForInpaint, InpaintModelConditioning, ImagePadForOutpaint) --------------------


def pixel_mask(mask: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """A MASK as [B, 1, H, W] at the image's size (bilinear)."""
    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    return F.interpolate(m, size=(pixels.shape[1], pixels.shape[2]), mode="bilinear", align_corners=False)


def crop_to_multiple(pixels: torch.Tensor, mask: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop [B, H, W, 3] pixels and their [B, 1, H, W] mask to multiples of `multiple`, around the center."""
    height, width = (pixels.shape[1] // multiple) * multiple, (pixels.shape[2] // multiple) * multiple
    if (height, width) == tuple(pixels.shape[1:3]):
        return pixels, mask
    top, left = (pixels.shape[1] % multiple) // 2, (pixels.shape[2] % multiple) // 2
    return (
        pixels[:, top : top + height, left : left + width, :],
        mask[:, :, top : top + height, left : left + width],
    )


def grey_out(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixels with the masked area (mask >= 0.5) set to mid grey, the "nothing here" an inpainting VAE latent gets."""
    keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
    return (pixels - 0.5) * keep + 0.5


def grow_mask_box(mask: torch.Tensor, grow_by: int) -> torch.Tensor:
    """VAEEncodeForInpaint's growth: the rounded [B, 1, H, W] mask dilated by a grow_by x grow_by box."""
    if grow_by == 0:
        return mask
    kernel = torch.ones(1, 1, grow_by, grow_by)
    padding = math.ceil((grow_by - 1) / 2)
    return torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)


def pad_for_outpaint(
    image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ImagePadForOutpaint: the image on a larger grey canvas, and a mask that is 1 on the new border and fades
    quadratically into the image over `feathering` pixels along the padded sides."""
    batch, height, width, channels = image.shape
    canvas = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5)
    canvas[:, top : top + height, left : left + width, :] = image
    mask = torch.ones(height + top + bottom, width + left + right)
    inner = torch.zeros(height, width)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        rows = torch.arange(height).unsqueeze(1).expand(height, width)
        cols = torch.arange(width).unsqueeze(0).expand(height, width)
        # distance to each padded side; sides without padding do not fade
        distance = torch.stack([
            rows if top else torch.full_like(rows, height),
            height - rows if bottom else torch.full_like(rows, height),
            cols if left else torch.full_like(cols, width),
            width - cols if right else torch.full_like(cols, width),
        ]).amin(dim=0).float()
        fade = ((feathering - distance) / feathering).clamp(min=0)
        inner = torch.where(distance < feathering, fade * fade, inner)
    mask[top : top + height, left : left + width] = inner
    return canvas, mask.unsqueeze(0)
