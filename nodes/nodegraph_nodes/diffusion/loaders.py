"""The file readers the model cache calls: one read of a file yields all of its components.

Each returns {component: value}; "info" carries what handles need without the weights (family, scheduler config,
latent scaling factor).
"""
from __future__ import annotations

from typing import Any

from . import loader
from .families import FAMILIES
from .model_cache import ModelCache
from .text_encoding import TEXT_FAMILIES

ENCODER_NAMES = {"sd1": ("l",), "sd2": ("l",), "sd2_base": ("l",), "sdxl": ("l", "g"), "sdxl_refiner": ("g",)}


def read_checkpoint(path: str) -> dict[str, Any]:
    components = loader.load_checkpoint(path)
    if components.family not in TEXT_FAMILIES:
        raise loader.CheckpointError(
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
    vae = loader.load_vae(path)
    return {"vae": vae, "info": {"family": "vae"}}


def read_controlnet(path: str) -> dict[str, Any]:
    controlnet = loader.load_controlnet(path)
    family = "sdxl" if getattr(controlnet.config, "addition_embed_type", None) == "text_time" else "sd1"
    return {"controlnet": controlnet, "info": {"family": family}}


def read_lora(path: str) -> dict[str, Any]:
    from .lora import read_lora_file

    lora = read_lora_file(path)
    return {"lora": lora, "info": {"family": "lora", "adapters": len(lora.adapters)}}


def register(cache: ModelCache) -> None:
    cache.register_loader("checkpoint", read_checkpoint)
    cache.register_loader("vae", read_vae)
    cache.register_loader("controlnet", read_controlnet)
    cache.register_loader("lora", read_lora)
