"""Image upscale models (ESRGAN, Real-ESRGAN, SwinIR, ... : whatever spandrel recognises) and ComfyUI's tiled
upscaling with them.

Files: read by content through weights_files (safetensors, or a pickle through torch's weights-only unpickler: most
upscale models are published as .pth pickles, and a full unpickle could run code hidden in the file). The weights
go to spandrel's ModelLoader, which recognises the architecture and its hyperparameters from the keys and shapes.

spandrel imports torchvision at import time for two architectures (LaMa, RestoreFormer) that only use it when they
run. torchvision is not a dependency here (installed from PyPI it would pull a CUDA build of torch), so when it is
missing, `import spandrel` runs with a placeholder `torchvision` module that is removed again right after: those two
architectures then say they need torchvision when run, every other one works.

Tiling (ComfyUI's ImageUpscaleWithModel): tiles of 512 pixels overlapping by 32; each upscaled tile is weighted by a
ramp over the upscaled overlap at its borders (1/n ... n/n) and the weighted tiles are averaged. An image within
one tile is upscaled whole. If the accelerator runs out of memory the tile size is halved, down to 128.
"""
from __future__ import annotations

import contextlib
import enum
import itertools
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

TILE, OVERLAP, MIN_TILE = 512, 32, 128


class UpscaleModelError(ValueError):
    """A file that is not a single-image upscale model spandrel knows."""


def _needs_torchvision(*_: Any, **__: Any) -> Any:
    raise RuntimeError("this model architecture needs torchvision: pip install torchvision (matching your torch)")


@contextlib.contextmanager
def _torchvision_placeholder() -> Iterator[None]:
    """A stand-in `torchvision.transforms.functional` for the duration of `import spandrel` only."""
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    modules = {name: types.ModuleType(name) for name in names}
    functional = modules["torchvision.transforms.functional"]
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    functional.rotate = functional.normalize = _needs_torchvision
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = functional
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:  # never leave it behind: other libraries test for torchvision by importing it
            if sys.modules.get(name) is modules[name]:
                del sys.modules[name]


def spandrel_module() -> Any:
    """spandrel, imported (with the torchvision placeholder when torchvision is not installed)."""
    try:
        import spandrel
    except ModuleNotFoundError as error:
        if error.name == "spandrel":
            raise UpscaleModelError(
                "upscale models need spandrel: pip install --no-deps spandrel==0.4.2 einops "
                "(--no-deps: its torchvision requirement would pull a second, CUDA build of torch)"
            ) from error
        if error.name != "torchvision":
            raise
        for name in [n for n in sys.modules if n == "spandrel" or n.startswith("spandrel.")]:
            del sys.modules[name]  # the half-imported package
        with _torchvision_placeholder():
            import spandrel
    return spandrel


def load_upscale_model(path: str | Path) -> Any:
    """A spandrel ImageModelDescriptor (eval mode, on the CPU) for an upscale model file."""
    from .weights_files import load_state_dict

    state = load_state_dict(path, allow_pickle=True)
    if "module.layers.0.residual_group.blocks.0.norm1.weight" in state:  # SwinIR saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    spandrel = spandrel_module()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as error:
        raise UpscaleModelError(
            f"{path}: not an upscale model architecture spandrel knows ({len(state)} tensors, e.g. "
            f"{sorted(state)[:3]})"
        ) from error
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(f"{path}: an upscale model must be a single-image model, this is a "
                                f"{type(descriptor).__name__} ({descriptor.architecture.name})")
    return descriptor.eval()


def _ramp_weights(tile: torch.Tensor, feather: int) -> torch.Tensor:
    """Weights for one upscaled tile [B, C, h, w]: 1 inside, (t + 1) / feather at distance t from each border."""
    weights = torch.ones_like(tile)
    for dim in (2, 3):
        if feather >= weights.shape[dim]:
            continue
        for t in range(feather):
            factor = (t + 1) / feather
            weights.narrow(dim, t, 1).mul_(factor)
            weights.narrow(dim, weights.shape[dim] - 1 - t, 1).mul_(factor)
    return weights


def tiled_scale(
    images: torch.Tensor,
    function: Callable[[torch.Tensor], torch.Tensor],
    scale: int,
    tile: int = TILE,
    overlap: int = OVERLAP,
    out_channels: int = 3,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Run `function` (x [1, C, h, w] -> [1, out_channels, h * scale, w * scale]) over [B, C, H, W] images in
    overlapping tiles and blend them (see the module doc). Output on the CPU, float32."""
    batch, _, height, width = images.shape
    output = torch.empty(batch, out_channels, round(height * scale), round(width * scale))
    for b in range(batch):
        image = images[b : b + 1]
        if height <= tile and width <= tile:
            output[b : b + 1] = function(image).float().cpu()
            if progress:
                progress()
            continue
        total = torch.zeros(1, out_channels, output.shape[2], output.shape[3])
        weight = torch.zeros_like(total)
        starts = [range(0, size - overlap, tile - overlap) if size > tile else [0] for size in (height, width)]
        for y, x in itertools.product(*starts):
            y, x = max(0, min(height - overlap, y)), max(0, min(width - overlap, x))
            piece = image[:, :, y : y + min(tile, height - y), x : x + min(tile, width - x)]
            upscaled = function(piece).float().cpu()
            w = _ramp_weights(upscaled, round(overlap * scale))
            top, left = round(y * scale), round(x * scale)
            total[:, :, top : top + w.shape[2], left : left + w.shape[3]] += upscaled * w
            weight[:, :, top : top + w.shape[2], left : left + w.shape[3]] += w
            if progress:
                progress()
        output[b : b + 1] = total / weight
    return output


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles tiled_scale runs per image."""
    if height <= tile and width <= tile:
        return 1
    count = 1
    for size in (height, width):
        count *= len(range(0, size - overlap, tile - overlap)) if size > tile else 1
    return count


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def upscale_image(
    descriptor: Any,
    image: torch.Tensor,
    tile: int = TILE,
    overlap: int = OVERLAP,
    progress: Callable[[int, int], None] | None = None,
    min_tile: int = MIN_TILE,
) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> IMAGE [B, H * scale, W * scale, C] clamped to 0..1, tiled; on running out of memory
    the tile is halved and the whole image redone, until a tile below `min_tile` would be needed."""
    param = next(descriptor.model.parameters())
    x = image.movedim(-1, 1).to(param.device)

    def run(piece: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return descriptor(piece.to(param.dtype))

    while True:
        total = x.shape[0] * tile_count(x.shape[2], x.shape[3], tile, overlap)
        done = [0]

        def step() -> None:
            done[0] += 1
            if progress:
                progress(done[0], total)

        try:
            out = tiled_scale(x, run, descriptor.scale, tile, overlap, descriptor.output_channels, step)
            break
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            tile //= 2
            if tile < min_tile:
                raise
            if param.device.type == "cuda":
                torch.cuda.empty_cache()
    return out.movedim(1, -1).clamp(0.0, 1.0)
