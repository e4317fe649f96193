"""The file readers the model cache calls (one read of a file yields all of its components), and the model cache of
a runtime, made with them.

Each returns {component: value}; "info" carries what handles need without the weights (family, scheduler config,
latent scaling factor).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import checkpoint_files
from .families import FAMILIES
from .model_cache import ModelCache
from .text_encoding import TEXT_FAMILIES

if TYPE_CHECKING:
    from nodegraph.engine import Runtime

ENCODER_NAMES = {"sd1": ("l",), "sd2": ("l",), "sd2_base": ("l",), "sdxl": ("l", "g"), "sdxl_refiner": ("g",)}


def read_checkpoint(path: str) -> dict[str, Any]:
    components = checkpoint_files.read_checkpoint_file(path)
    if components.family not in TEXT_FAMILIES:
        raise checkpoint_files.CheckpointError(
            f"{path}: {components.family} checkpoints are recognised but not supported by the text encoder yet"
        )
    names = ENCODER_NAMES[components.family]
    from .unclip_files import read_embedded_clip_vision

    clip_vision = read_embedded_clip_vision(path)  # unCLIP checkpoints carry a CLIP image encoder
    extra = {} if clip_vision is None else {"clip_vision": clip_vision}
    return {
        **extra,
        "unet": components.unet,
        "vae": components.vae,
        "clip": {
            "models": dict(zip(names, components.text_encoders)),
            "tokenizers": dict(zip(names, components.tokenizers)),
        },
        "info": {
            "family": components.family,
            "scheduler_config": dict(components.scheduler_config),
            "latent_scale": FAMILIES[components.family].latent_scale,
            "latent_rgb": components.latent_rgb,
            "clip_vision": clip_vision is not None,
        },
    }


def read_vae(path: str) -> dict[str, Any]:
    vae = checkpoint_files.read_vae_file(path)
    return {"vae": vae, "info": {"family": "vae"}}


def read_controlnet(path: str) -> dict[str, Any]:
    controlnet = checkpoint_files.read_controlnet_file(path)
    family = "sdxl" if getattr(controlnet.config, "addition_embed_type", None) == "text_time" else "sd1"
    return {"controlnet": controlnet, "info": {"family": family}}


def read_unet(path: str) -> dict[str, Any]:
    """A diffusion model alone (UNETLoader): a UNet file, or the UNet of a whole checkpoint."""
    from .split_files import read_unet_file

    family, unet, scheduler_config = read_unet_file(path)
    info = {"family": family.name, "scheduler_config": dict(scheduler_config), "latent_scale": family.latent_scale}
    return {"unet": unet, "info": info}


def read_lora(path: str) -> dict[str, Any]:
    from .lora import read_lora_file

    lora = read_lora_file(path)
    return {"lora": lora, "info": {"family": "lora", "adapters": len(lora.adapters)}}


def read_upscale_model(path: str) -> dict[str, Any]:
    from .upscale import load_upscale_model

    descriptor = load_upscale_model(path)
    # the module is the cached component (moved between devices by the cache); the descriptor that runs it holds
    # the same module
    return {
        "model": descriptor.model,
        "info": {"descriptor": descriptor, "architecture": descriptor.architecture.name, "scale": descriptor.scale},
    }


def read_clip_vision(path: str) -> dict[str, Any]:
    from .clip_vision import load_clip_vision

    model = load_clip_vision(path)
    return {"clip_vision": model, "info": {"image_size": model.config.image_size}}


def register(cache: ModelCache) -> None:
    from . import derived

    derived.register(cache)
    cache.register_loader("unet", read_unet)
    cache.register_loader("checkpoint", read_checkpoint)
    cache.register_loader("vae", read_vae)
    cache.register_loader("controlnet", read_controlnet)
    cache.register_loader("lora", read_lora)
    cache.register_loader("upscale_model", read_upscale_model)
    cache.register_loader("clip_vision", read_clip_vision)
    from .style_model import read_style_model

    cache.register_loader("style_model", read_style_model)


def _make_model_cache(runtime: Runtime) -> ModelCache:
    cache = ModelCache(device=runtime.device, precision=runtime.precision, vram_budget=runtime.vram_budget,
                       ram_budget=runtime.ram_budget)
    register(cache)
    return cache


def model_cache(runtime: Runtime) -> ModelCache:
    """The runtime's model cache, made on first use from its settings (device, precision, vram_budget,
    ram_budget: the `--device` / `--precision` / budget options of the CLI and the server, in `Folders.settings`),
    with the file readers above registered. Executors sharing a runtime share it; each runtime has its own."""
    cache = runtime.resource("models", _make_model_cache)
    cache.max_batch = runtime.max_batch  # not part of the cache's identity: the loaded models stay
    cache.prompts_running = lambda: runtime.prompts_running  # for the UNet batchers (batching.py)
    return cache
