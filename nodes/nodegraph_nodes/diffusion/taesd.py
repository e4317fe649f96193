"""TAESD live previews: a tiny distilled VAE decoder (diffusers' AutoencoderTiny) turns the sampler's latents into a
full-resolution preview, much closer to the final image than the latent -> RGB factors.

Where the weights come from, as in ComfyUI: the `vae_approx` models folder, the first file whose name starts with
the family's decoder name (`taesd_decoder` for SD1 / SD2 latents, `taesdxl_decoder` for SDXL), e.g.
`models/vae_approx/taesd_decoder.safetensors`. Two key layouts load: the published decoder files (an
`nn.Sequential` whose entry 0 is a parameter-free clamp, so keys read `1.weight`, `3.conv.0.weight`, ...) and
diffusers' own (`decoder.layers.0.weight`, ... in an AutoencoderTiny's weights; the `decoder.` prefix optional). The
decoder's shape (latent channels, width, blocks per stage) is read from the tensors, so any size loads. Only
`.safetensors` files are read: pickled `.pth` files are skipped with a warning, as nodegraph never unpickles model
files.

The decoder takes latents in the UNet's space (already multiplied by the VAE scaling factor), which is what the
sampler's callback hands out, and returns pixels in [-1, 1].
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from PIL import Image

if TYPE_CHECKING:
    from nodegraph.engine import Folders

log = logging.getLogger(__name__)

# latent family -> decoder file name prefix in models/vae_approx (ComfyUI's names)
TAESD_DECODERS = {"sd1": "taesd_decoder", "sdxl": "taesdxl_decoder"}

_cache: dict[tuple[str, int, int], torch.nn.Module] = {}
_lock = threading.Lock()
_warned: set[str] = set()


class TaesdError(ValueError):
    """A file in vae_approx that is not a TAESD decoder we can build."""


def find_decoder(env: Folders | None, latent_family: str) -> Path | None:
    """The TAESD decoder file for this latent family in the models roots' `vae_approx` folders, or None."""
    prefix = TAESD_DECODERS.get(latent_family)
    if prefix is None or env is None or not hasattr(env, "list_models"):
        return None
    for name in env.list_models("vae_approx"):
        if Path(name).name.startswith(prefix):
            path = env.model_path("vae_approx", name)
            if path.is_file() and path.suffix.lower() == ".safetensors":
                return path
            _warn_once(str(path), f"TAESD previews: {path} is not a .safetensors file and is skipped (convert it "
                                  "to .safetensors); using latent -> RGB previews")
    return None


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def diffusers_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder's weights keyed as diffusers' DecoderTiny (`layers.N...`), from either layout."""
    decoder = {k.removeprefix("decoder."): v for k, v in state.items() if not k.startswith("encoder.")}
    if any(k.startswith("layers.") for k in decoder):
        return {k: v for k, v in decoder.items() if k.startswith("layers.")}
    converted = {}
    for key, value in decoder.items():
        index, dot, rest = key.partition(".")
        if not index.isdigit() or not dot:
            raise TaesdError(f"unexpected key {key!r}: not a TAESD decoder")
        # The published files count the clamp as entry 0; diffusers applies it in forward() instead.
        converted[f"layers.{int(index) - 1}.{rest}"] = value
    return converted


def decoder_config(layers: dict[str, torch.Tensor]) -> dict[str, Any]:
    """AutoencoderTiny's decoder settings read from the weights: latent channels, width, blocks per stage."""
    entries: dict[int, str] = {}
    for key in layers:
        match = re.match(r"layers\.(\d+)\.(conv\.0\.weight|weight)$", key)
        if match:
            entries[int(match.group(1))] = "block" if match.group(2).startswith("conv") else "conv"
    order = [entries[i] for i in sorted(entries)]
    if len(order) < 3 or order[0] != "conv" or order[-1] != "conv":
        raise TaesdError("not a TAESD decoder: expected a first and a last convolution around its blocks")
    first, last = layers[f"layers.{min(entries)}.weight"], layers[f"layers.{max(entries)}.weight"]
    stages, run = [], 0
    for kind in order[1:]:
        if kind == "block":
            run += 1
        else:
            stages.append(run)
            run = 0
    return {
        "latent_channels": int(first.shape[1]),
        "channels": int(first.shape[0]),
        "out_channels": int(last.shape[0]),
        "num_decoder_blocks": tuple(stages),
    }


def build_decoder(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A diffusers DecoderTiny holding these weights (either layout)."""
    from diffusers import AutoencoderTiny

    layers = diffusers_layout(state)
    config = decoder_config(layers)
    stages = len(config["num_decoder_blocks"])
    width = (config["channels"],) * stages
    model = AutoencoderTiny(
        out_channels=config["out_channels"], encoder_block_out_channels=width, decoder_block_out_channels=width,
        latent_channels=config["latent_channels"], num_encoder_blocks=(1,) * stages,
        num_decoder_blocks=config["num_decoder_blocks"],
    )
    try:
        model.decoder.load_state_dict({k: v.float() for k, v in layers.items()}, strict=True)
    except RuntimeError as exc:
        raise TaesdError(f"the weights do not fit a TAESD decoder of shape {config}: {exc}") from None
    return model.decoder.eval().requires_grad_(False)


def load_decoder(path: Path) -> torch.nn.Module:
    """The decoder in `path` (cached by path, size and modification time)."""
    from safetensors.torch import load_file

    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key not in _cache:
            _cache.clear()  # one decoder per family is in use at a time; keep memory small
            _cache[key] = build_decoder(load_file(str(path)))
        return _cache[key]


def decode_to_image(decoder: torch.nn.Module, latent: torch.Tensor) -> Image.Image:
    """The first sample of UNet-space `latent` decoded to a PIL image (8x the latent's size)."""
    sample = (latent[:1] if latent.ndim == 4 else latent[None]).detach().float()
    param = next(decoder.parameters())
    if param.device != sample.device:
        decoder.to(sample.device)
    with torch.inference_mode():
        pixels = decoder(sample)[0].movedim(0, -1).cpu()
    pixels = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def taesd_previewer(env: Folders | None, latent_family: str) -> Callable[[torch.Tensor], Image.Image] | None:
    """A latent -> preview image function using TAESD, or None when no decoder is installed (or it is broken)."""
    path = find_decoder(env, latent_family)
    if path is None:
        wanted = TAESD_DECODERS.get(latent_family, "(none for this model family)")
        _warn_once(f"missing:{latent_family}", f"TAESD previews asked for, but models/vae_approx has no "
                                               f"{wanted}.safetensors; using latent -> RGB previews")
        return None
    try:
        decoder = load_decoder(path)
    except (TaesdError, OSError, ValueError) as exc:
        _warn_once(f"broken:{path}", f"TAESD previews: cannot use {path}: {exc}; using latent -> RGB previews")
        return None
    return lambda latent: decode_to_image(decoder, latent)
