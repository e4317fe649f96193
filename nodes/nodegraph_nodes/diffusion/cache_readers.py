"""The file readers the model cache calls: one read of a file yields all of its components.

Each returns {component: value}; "info" carries what handles need without the weights (family, scheduler config,
latent scaling factor).
"""
from __future__ import annotations

import threading
from typing import Any

from nodegraph.engine.resources import register_owner

from . import checkpoint_files
from .families import FAMILIES
from .model_cache import ModelCache, default_device
from .text_encoding import TEXT_FAMILIES

ENCODER_NAMES = {"sd1": ("l",), "sd2": ("l",), "sd2_base": ("l",), "sdxl": ("l", "g"), "sdxl_refiner": ("g",)}


def read_checkpoint(path: str) -> dict[str, Any]:
    components = checkpoint_files.read_checkpoint_file(path)
    if components.family not in TEXT_FAMILIES:
        raise checkpoint_files.CheckpointError(
            f"{path}: {components.family} checkpoints are recognised but not supported by the text encoder yet"
        )
    names = ENCODER_NAMES[components.family]
    return {
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


_cache: ModelCache | None = None
_cache_settings: dict[str, Any] = {}
# Prompts running side by side (--concurrency) may ask for the cache at the same moment, the first time included:
# without the lock one could get a cache whose file loaders are not registered yet, or two caches could be made.
_cache_lock = threading.Lock()


def model_cache(settings: dict[str, Any] | None = None) -> ModelCache:
    """The process-wide cache, created on first use from `settings` (device, precision, vram_budget, ram_budget:
    the `--device` / `--precision` / budget options of the CLI and the server, passed in `Folders.settings`).
    Asking with different settings replaces the cache (the old models are dropped)."""
    global _cache, _cache_settings
    given = settings or {}
    # Compare effective settings, so that "auto" and the device it picks (or an absent budget) count as the same.
    wanted = {
        "device": default_device(str(given.get("device") or "auto")),
        "precision": given.get("precision") or "auto",
        "vram_budget": given.get("vram_budget"),
        "ram_budget": given.get("ram_budget"),
    }
    with _cache_lock:
        if _cache is None or (settings is not None and wanted != _cache_settings):
            if _cache is not None:
                _cache.free(unload_models=True)
            cache = ModelCache(**wanted)
            register(cache)
            register_owner(cache)
            _cache, _cache_settings = cache, wanted  # published only once it can load files
        if settings is not None:
            # Not part of the cache's identity: changing it keeps the loaded models.
            _cache.max_batch = max(1, int(given.get("max_batch") or 1))
        return _cache
