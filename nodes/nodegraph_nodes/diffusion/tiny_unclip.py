"""A tiny SD 2.1 unCLIP model (see unclip.py), for tests and `make-tiny-models`: tiny_sd2 with a class-embedding
UNet that takes a tiny CLIP vision tower's image embeddings plus the noise-level embedding, and that tower."""
from __future__ import annotations

from .clip_vision import tiny_clip_vision
from .tiny import TINY_SD2_UNET, Components, build_unet, tiny_sd2


def tiny_sd21_unclip(seed: int = 0) -> Components:
    components = tiny_sd2(seed)
    components.clip_vision = tiny_clip_vision(seed + 14)
    width = components.clip_vision.config.projection_dim
    components.unet = build_unet(
        {**TINY_SD2_UNET, "class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * width},
        seed + 15,
    )
    return components
