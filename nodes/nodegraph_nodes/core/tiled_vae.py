"""Tiled VAE decode / encode: the VAE runs on overlapping tiles whose results are blended with linear feathering,
so the activation memory is bounded by the tile size instead of the picture size.

This is ComfyUI's recipe (comfy.utils.tiled_scale and VAE.decode_tiled_ / encode_tiled_): each tile's output is
weighted by a mask that ramps linearly over `overlap` cells at its edges, the weighted sum is divided by the summed
weights, and the result is the average of three tilings (tile_x / 2 by tile_y * 2, tile_x * 2 by tile_y / 2, and
tile_x by tile_y), which hides the seams any single tiling leaves. A picture that fits in one tile is processed
whole.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Callable

import torch

from ..diffusion.cache_readers import model_cache
from ..diffusion.ops import with_oom_retry

if TYPE_CHECKING:
    from nodegraph.engine import Runtime


def tiled_scale(
    samples: torch.Tensor,
    function: Callable[[torch.Tensor], torch.Tensor],
    tile: tuple[int, int],
    overlap: int,
    scale: float,
    out_channels: int,
) -> torch.Tensor:
    """Apply `function` (maps [1, C, h, w] to [1, out_channels, h * scale, w * scale]) tile by tile."""
    batch, _, height, width = samples.shape
    out_h, out_w = round(height * scale), round(width * scale)
    output = torch.empty(batch, out_channels, out_h, out_w)
    for b in range(batch):
        sample = samples[b:b + 1]
        if height <= tile[0] and width <= tile[1]:
            output[b:b + 1] = function(sample).float().cpu()
            continue
        total = torch.zeros(1, out_channels, out_h, out_w)
        weight = torch.zeros(1, out_channels, out_h, out_w)
        rows = range(0, height - overlap, tile[0] - overlap) if height > tile[0] else [0]
        cols = range(0, width - overlap, tile[1] - overlap) if width > tile[1] else [0]
        for y, x in itertools.product(rows, cols):
            y = max(0, min(height - overlap, y))
            x = max(0, min(width - overlap, x))
            h, w = min(tile[0], height - y), min(tile[1], width - x)
            result = function(sample[:, :, y:y + h, x:x + w]).float().cpu()
            mask = torch.ones_like(result)
            feather = round(overlap * scale)
            for dim in (2, 3):
                if feather >= mask.shape[dim]:
                    continue
                for t in range(feather):
                    ramp = (t + 1) / feather
                    mask.narrow(dim, t, 1).mul_(ramp)
                    mask.narrow(dim, mask.shape[dim] - 1 - t, 1).mul_(ramp)
            top, left = round(y * scale), round(x * scale)
            total[:, :, top:top + result.shape[2], left:left + result.shape[3]] += result * mask
            weight[:, :, top:top + result.shape[2], left:left + result.shape[3]] += mask
        output[b:b + 1] = total / weight
    return output


def _three_tilings(samples, function, tile_x: int, tile_y: int, overlap: int, scale: float, channels: int):
    tilings = [(tile_y * 2, tile_x // 2), (tile_y // 2, tile_x * 2), (tile_y, tile_x)]
    total = sum(tiled_scale(samples, function, (ty, tx), overlap, scale, channels) for ty, tx in tilings)
    return total / 3.0


def decode_tiled(runtime: Runtime, vae, samples: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Raw latents -> IMAGE [B, H, W, 3] in 0..1; `tile` and `overlap` in latent cells."""
    cache = model_cache(runtime)
    with cache.use(vae.ref) as model:
        param = next(model.parameters())

        def decode(z: torch.Tensor) -> torch.Tensor:
            return model.decode(z.to(param.device, param.dtype)).sample.float()

        def run() -> torch.Tensor:
            with torch.no_grad():
                images = _three_tilings(samples.float(), decode, tile, tile, overlap, 8, 3)
            return ((images + 1.0) / 2.0).clamp(0, 1).movedim(1, -1)

        return with_oom_retry(cache, run)


def encode_tiled(runtime: Runtime, vae, pixels: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """IMAGE [B, H, W, 3] -> raw latents (the distribution's mean); `tile` and `overlap` in pixels. The image is
    cropped to a multiple of 8 pixels as VAEEncode does."""
    h, w = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    if h == 0 or w == 0:
        raise ValueError(f"image of {pixels.shape[2]}x{pixels.shape[1]} is smaller than 8x8 pixels")
    x = pixels[:, :h, :w, :3].movedim(-1, 1).float() * 2.0 - 1.0
    cache = model_cache(runtime)
    with cache.use(vae.ref) as model:
        param = next(model.parameters())
        channels = model.config.latent_channels

        def encode(chunk: torch.Tensor) -> torch.Tensor:
            return model.encode(chunk.to(param.device, param.dtype)).latent_dist.mode().float()

        def run() -> torch.Tensor:
            with torch.no_grad():
                return _three_tilings(x, encode, tile, tile, overlap, 1 / 8, channels)

        return with_oom_retry(cache, run)
