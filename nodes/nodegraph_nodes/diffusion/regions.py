"""Several prompts per side, each acting on an area, through a mask, with a strength, or in a timestep range:
ComfyUI's area / mask conditioning (comfy/samplers.py calc_cond_batch and get_area_and_mult), written out.

For every entry of a side (positive, or negative) that is active at the current sigma:

* its area (ConditioningSetArea: latent cells; ConditioningSetAreaPercentage: fractions of the latent) is cut out of
  x and the UNet denoises only that crop, so a 64 px area on a larger canvas is generated at the model's own size;
* its weight is `strength` times its mask (resized bilinearly to the latent, times `mask_strength`, cropped to the
  area), or, for an area without a mask, `strength` with a linear ramp of min(8, size // 4) cells on every edge that
  lies inside the latent, so neighbouring areas blend;
* the side's prediction of x0 is the weighted sum of the entries' predictions over the sum of the weights, per
  pixel (a pixel no entry covers gets 0, as in ComfyUI);
* classifier-free guidance then combines the two sides' x0: uncond + (cond - uncond) * cfg (cfg 1: no negative).

An entry is active while sigma lies between the sigmas of its start_percent and end_percent. Each entry runs through
its own single-conditioning `CFGDenoiser` (ControlNets, SDXL size conditioning and long prompts work as for one
prompt); SDXL size conditioning defaults to the full latent's size, not the crop's, as ComfyUI does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .conditioning import Conditioning, Conditionings, entries
from .denoiser import VAE_SCALE_FACTOR, CFGDenoiser, apply_cfg
from .memory import placement
from .sigma_table import DiscreteModelSampling

ZERO_COUNT = 1e-37  # what ComfyUI starts the per-pixel weight sums at: uncovered pixels come out as 0


def needs_regions(positive: Conditionings, negative: Conditionings | None) -> bool:
    """Whether sampling needs the regional path (several prompts on a side, or any area / mask / range)."""
    sides = [entries(positive)] + ([entries(negative)] if negative is not None else [])
    return any(len(side) > 1 or any(c.is_regional for c in side) for side in sides)


def make_denoiser(unet, model_sampling: DiscreteModelSampling, positive: Conditionings,
                  negative: Conditionings | None, cfg: float, *, keep_uncond: bool = False, patches=()):
    """The denoiser for a positive / negative pair: the batched CFGDenoiser for one plain prompt per side, else the
    regional one. keep_uncond / patches: see CFGDenoiser (the regional one applies the CFG patches that need no
    second UNet pass)."""
    if needs_regions(positive, negative):
        return RegionalDenoiser(unet, model_sampling, positive, negative, cfg, keep_uncond=keep_uncond,
                                patches=patches)
    return CFGDenoiser(unet, model_sampling, entries(positive)[0],
                       None if negative is None else entries(negative)[0], cfg, keep_uncond=keep_uncond,
                       patches=patches)


class RegionalDenoiser:
    """D(x, sigma) -> x0 for CONDITIONING values with several entries, areas, masks and timestep ranges."""

    def __init__(self, unet, model_sampling: DiscreteModelSampling, positive: Conditionings,
                 negative: Conditionings | None, cfg: float, *, keep_uncond: bool = False, patches=()) -> None:
        self.unet = unet
        self.device = placement(unet)[0]
        self.model_sampling = model_sampling.to(self.device)
        self.cfg = float(cfg)
        self.patches = tuple(patches)
        self.uncond_denoised: torch.Tensor | None = None  # for CFG++ samplers (see CFGDenoiser)
        keep_uncond = keep_uncond or any(getattr(p, "needs_uncond", False) for p in self.patches)
        use_uncond = not math.isclose(self.cfg, 1.0) or (keep_uncond and negative is not None)
        if use_uncond and negative is None:
            raise ValueError("a negative conditioning is needed when cfg != 1")
        self.sides = [entries(positive)] + ([entries(negative)] if use_uncond else [])
        self._denoisers: dict[tuple[int, int, int, int], CFGDenoiser] = {}
        self._weights: dict[tuple[int, int, int, int], tuple[tuple[int, int, int, int], torch.Tensor] | None] = {}

    @property
    def unet_calls(self) -> int:
        return sum(d.unet_calls for d in self._denoisers.values())

    @property
    def controlnet_calls(self) -> int:
        return sum(d.controlnet_calls for d in self._denoisers.values())

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = float(sigma[0])
        predictions = []
        for side_index, side in enumerate(self.sides):
            total = torch.zeros_like(x)
            count = torch.full_like(x, ZERO_COUNT)
            for entry_index, cond in enumerate(side):
                if not self._active(cond, s):
                    continue
                placed = self._area_and_weight(side_index, entry_index, cond, x)
                if placed is None:
                    continue
                (h, w, y, left), weight = placed
                crop = x[:, :, y:y + h, left:left + w]
                denoised = self._denoiser(side_index, entry_index, cond, x)(crop, sigma)
                total[:, :, y:y + h, left:left + w] += denoised * weight
                count[:, :, y:y + h, left:left + w] += weight
            predictions.append(total / count)
        if len(predictions) == 1:
            self.uncond_denoised = predictions[0]
            return predictions[0]
        cond_pred, uncond_pred = predictions
        self.uncond_denoised = uncond_pred
        if self.patches:
            return apply_cfg(self.patches, x, sigma, cond_pred, uncond_pred, self.cfg)
        return uncond_pred + (cond_pred - uncond_pred) * self.cfg

    def _active(self, cond: Conditioning, sigma: float) -> bool:
        high = self.model_sampling.percent_to_sigma(cond.start_percent)
        low = self.model_sampling.percent_to_sigma(cond.end_percent)
        return low <= sigma <= high

    def _denoiser(self, side_index: int, entry_index: int, cond: Conditioning, x: torch.Tensor) -> CFGDenoiser:
        key = (side_index, entry_index, x.shape[-2], x.shape[-1])
        if key not in self._denoisers:
            if cond.pooled is not None and cond.time_ids is None:
                # SDXL size conditioning of the whole picture, not of the crop
                height, width = x.shape[-2] * VAE_SCALE_FACTOR, x.shape[-1] * VAE_SCALE_FACTOR
                ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
                cond = _replace(cond, time_ids=ids)
            self._denoisers[key] = CFGDenoiser(self.unet, self.model_sampling, cond, None, 1.0)
        return self._denoisers[key]

    def _area_and_weight(self, side_index: int, entry_index: int, cond: Conditioning, x: torch.Tensor):
        key = (side_index, entry_index, x.shape[-2], x.shape[-1])
        if key not in self._weights:
            self._weights[key] = area_and_weight(cond, x.shape[0], x.shape[1], x.shape[-2], x.shape[-1])
        placed = self._weights[key]
        if placed is None:
            return None
        area, weight = placed
        return area, weight.to(x.device, x.dtype)


def _replace(cond: Conditioning, **changes) -> Conditioning:
    from dataclasses import replace

    return replace(cond, **changes)


def area_and_weight(cond: Conditioning, batch: int, channels: int, height: int, width: int):
    """((h, w, y, x) in latent cells, weight [batch, channels, h, w]) for `cond` on a latent of height x width, or
    None when its area lies outside the latent."""
    area = _latent_area(cond.area, height, width)
    mask = None
    if cond.mask is not None:
        mask = cond.mask.float().cpu()
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        if mask.shape[-2:] != (height, width):
            mask = F.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear",
                                 align_corners=False).squeeze(1)
        if cond.set_area_to_bounds:
            area = _mask_bounds(mask, height, width)
    h, w, y, left = area
    h, w = min(h, height - y), min(w, width - left)
    if h <= 0 or w <= 0:
        return None
    if mask is not None:
        mask = mask[:batch, y:y + h, left:left + w] * cond.mask_strength
        weight = mask.unsqueeze(1).repeat(math.ceil(batch / mask.shape[0]), channels, 1, 1)[:batch]
    else:
        weight = torch.ones(batch, channels, h, w)
    weight = weight * cond.strength
    if cond.mask is None and cond.area is not None:
        _feather(weight, (h, w), (y, left), (height, width))
    return (h, w, y, left), weight


def _latent_area(area: tuple | None, height: int, width: int) -> tuple[int, int, int, int]:
    if area is None:
        return height, width, 0, 0
    if area[0] == "percentage":
        _, h, w, y, x = area
        return max(1, round(h * height)), max(1, round(w * width)), round(y * height), round(x * width)
    return tuple(int(v) for v in area)  # type: ignore[return-value]


def _mask_bounds(mask: torch.Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """The bounding box of the mask's non-zero cells over the batch; an empty mask gives an 8 x 8 area at 0, 0."""
    nonzero = torch.nonzero(mask.abs().amax(dim=0) > 0)
    if len(nonzero) == 0:
        return min(8, height), min(8, width), 0, 0
    (y0, x0), (y1, x1) = nonzero.min(dim=0).values.tolist(), nonzero.max(dim=0).values.tolist()
    return y1 - y0 + 1, x1 - x0 + 1, y0, x0


def _feather(weight: torch.Tensor, size: tuple[int, int], start: tuple[int, int], full: tuple[int, int]) -> None:
    """Ramp the weight linearly over min(8, size // 4) cells at each edge of the area inside the latent."""
    for axis in range(2):
        dim = axis + 2
        ramp = min(8, weight.shape[dim] // 4)
        for t in range(ramp):
            factor = (t + 1) / ramp
            if start[axis] != 0:
                weight.narrow(dim, t, 1).mul_(factor)
            if start[axis] + size[axis] < full[axis]:
                weight.narrow(dim, size[axis] - 1 - t, 1).mul_(factor)
