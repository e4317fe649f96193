"""Memory estimates for the big steps (one UNet call, one VAE decode), checked before the work starts.

A 4096x4096 txt2img passes validation, then sits for many minutes in its first UNet call or dies of an
out-of-memory error half-way. The estimate lets the node refuse at once, saying what would fit.

The estimates are linear in the number of latent (or pixel) cells: attention runs through PyTorch's scaled dot
product attention, whose fused kernels (CPU and CUDA) do not hold the full attention matrix. The constants are
rough upper figures measured on SD-family models: a UNet call holds about 32 values per channel of its first block
per latent cell and batch row (for a 320-channel SD1 UNet in fp16 about 20 KB per latent cell); a VAE decode about
8 values per channel of its full-resolution blocks per output pixel.
"""
from __future__ import annotations

import math
from typing import Any

import torch

UNET_VALUES_PER_CHANNEL = 32
VAE_VALUES_PER_CHANNEL = 8
LATENT_TO_PIXELS = 8


class WorkTooLarge(ValueError):
    """The work would not fit in the device's memory (the message says what would)."""


def placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of a module's (first floating-point) weights. diffusers' `device` / `dtype` properties
    answer the same for our models, but walk every submodule looking for offload hooks first: ~0.3 ms per call on
    the SD1 UNet, paid per prompt by each sampler, which adds up when many prompts run at once."""
    for param in module.parameters():
        if param.is_floating_point():
            return param.device, param.dtype
    return torch.device("cpu"), torch.float32


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def available_bytes(device: torch.device, settings: dict[str, Any] | None = None) -> int:
    """Memory the work may use on `device`: the `work_memory_budget` setting if given, else what is free now."""
    given = (settings or {}).get("work_memory_budget")
    if given:
        return int(given)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        reserved_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + reserved_unused)
    if device.type == "mps":
        return 1 << 62  # no reliable figure: do not refuse
    import psutil

    return min(int(psutil.virtual_memory().available), address_space_headroom())


def address_space_headroom() -> int:
    """What this process may still map under its address-space limit (`ulimit -v`, RLIMIT_AS), or a huge number
    when there is none: a server run under such a limit must refuse work that would hit it."""
    try:
        import resource

        limit, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if limit == resource.RLIM_INFINITY:
            return 1 << 62
        with open("/proc/self/statm") as fh:
            mapped = int(fh.read().split()[0]) * resource.getpagesize()
        return max(0, limit - mapped)
    except (ImportError, OSError, ValueError, IndexError):
        return 1 << 62


def unet_call_bytes(unet: torch.nn.Module, latent_shape: tuple[int, ...], rows_per_sample: int) -> int:
    """Peak activation bytes of one UNet call on a [B, C, h, w] latent with `rows_per_sample` (2 with CFG)."""
    width = int(unet.config.block_out_channels[0])
    dtype_size = torch.empty((), dtype=placement(unet)[1]).element_size()
    cells = int(latent_shape[0]) * rows_per_sample * int(latent_shape[-2]) * int(latent_shape[-1])
    return cells * width * dtype_size * UNET_VALUES_PER_CHANNEL


def check_unet_fits(unet: torch.nn.Module, latent_shape: tuple[int, ...], cfg: float,
                    settings: dict[str, Any] | None = None) -> None:
    """Raise WorkTooLarge if one UNet call on this latent would not fit; the message gives the largest size that
    would, at the same batch size."""
    rows = 1 if math.isclose(float(cfg), 1.0) else 2
    need = unet_call_bytes(unet, latent_shape, rows)
    device = placement(unet)[0]
    have = available_bytes(device, settings)
    if need <= have:
        return
    batch, h, w = int(latent_shape[0]), int(latent_shape[-2]), int(latent_shape[-1])
    per_cell = need / (batch * h * w)
    side = int(math.sqrt(have / (batch * per_cell))) * LATENT_TO_PIXELS // 64 * 64
    fits = f"about {side}x{side} at batch {batch}" if side >= 64 else f"nothing at batch {batch}; use batch 1"
    raise WorkTooLarge(
        f"sampling {w * LATENT_TO_PIXELS}x{h * LATENT_TO_PIXELS} at batch {batch} needs about {_gib(need)} for one "
        f"UNet call ({rows} rows per sample), and about {_gib(have)} is available on {device}; what fits is "
        f"{fits}"
    )


def vae_decode_bytes(vae: torch.nn.Module, latent_shape: tuple[int, ...], rows: int) -> int:
    """Peak activation bytes of decoding `rows` latents of this [.., C, h, w] shape in one VAE call."""
    channels = int(vae.config.block_out_channels[0])  # the width of the full-resolution blocks
    dtype_size = torch.empty((), dtype=placement(vae)[1]).element_size()
    pixels = int(latent_shape[-2]) * int(latent_shape[-1]) * LATENT_TO_PIXELS ** 2
    return rows * pixels * channels * dtype_size * VAE_VALUES_PER_CHANNEL


def vae_decode_rows(vae: torch.nn.Module, latent_shape: tuple[int, ...], settings: dict[str, Any] | None = None
                    ) -> int:
    """How many latents of this shape one VAE call may decode in the memory available now (at least 1)."""
    per_row = vae_decode_bytes(vae, latent_shape, 1)
    return max(1, available_bytes(placement(vae)[0], settings) // max(per_row, 1))


def check_vae_decode_fits(vae: torch.nn.Module, latent_shape: tuple[int, ...], batch_limit: int,
                          settings: dict[str, Any] | None = None) -> None:
    """Raise WorkTooLarge if decoding one chunk (`batch_limit` latents) of this size would not fit."""
    rows = min(int(latent_shape[0]), batch_limit)
    need = vae_decode_bytes(vae, latent_shape, rows)
    device = placement(vae)[0]
    have = available_bytes(device, settings)
    if need <= have:
        return
    per_pixel = need / (rows * int(latent_shape[-2]) * int(latent_shape[-1]) * LATENT_TO_PIXELS ** 2)
    side = int(math.sqrt(have / (rows * per_pixel))) // 64 * 64
    raise WorkTooLarge(
        f"decoding {latent_shape[-1] * LATENT_TO_PIXELS}x{latent_shape[-2] * LATENT_TO_PIXELS} needs about "
        f"{_gib(need)}, and about {_gib(have)} is available on {device}; what fits is about {side}x{side}"
    )