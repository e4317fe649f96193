"""Loader nodes: checkpoints, standalone VAEs, CLIP layer selection, text encoding."""
from __future__ import annotations

from typing import Any

from nodegraph.engine import Combo, Input, Int, Node, Output, String


def _models(kind: str):
    """Combo choices: the model files of one kind in the configured models roots."""

    def choices(env: Any) -> list[str]:
        return env.list_models(kind) if env is not None else []

    return choices


def _file_fingerprint(env: Any, kind: str, name: str) -> Any:
    """A replaced file (other size or mtime) must be read again, so it is part of the cache key."""
    try:
        stat = env.model_path(kind, name).stat()
    except (OSError, ValueError):
        return None
    return (stat.st_size, stat.st_mtime_ns)


class LoadCheckpoint(Node):
    """Load a Stable Diffusion checkpoint: a single .safetensors file (SD1.x, SD2.x, SDXL base or refiner, in the
    original layout that ComfyUI and A1111 use) or a diffusers folder. Returns the denoising model, the text
    encoder(s) and the VAE. Pickled .ckpt files are refused: convert them to .safetensors."""

    display_name = "Load Checkpoint"
    category = "loaders"
    aliases = ("CheckpointLoaderSimple",)
    ckpt_name = Combo(_models("checkpoints"), tooltip="The checkpoint (model) to load, from the checkpoints folder.")
    outputs = (
        Output("MODEL", tooltip="The model used for denoising latents."),
        Output("CLIP", tooltip="The CLIP model used for encoding text prompts."),
        Output("VAE", tooltip="The VAE model used for encoding and decoding images to and from latent space."),
    )

    @classmethod
    def fingerprint(cls, env: Any, ckpt_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "checkpoints", ckpt_name)

    def execute(self, ckpt_name: str) -> tuple[Any, Any, Any]:
        from ..diffusion import ops

        env = self.context.env
        return ops.load_checkpoint(env.model_path("checkpoints", ckpt_name), env.settings)


class VAELoader(Node):
    """Load a standalone VAE (original layout .safetensors, or a diffusers AutoencoderKL folder)."""

    display_name = "Load VAE"
    category = "loaders"
    vae_name = Combo(_models("vae"), tooltip="The VAE to load, from the vae folder.")
    outputs = (Output("VAE"),)

    @classmethod
    def fingerprint(cls, env: Any, vae_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "vae", vae_name)

    def execute(self, vae_name: str) -> tuple[Any]:
        from ..diffusion import ops

        env = self.context.env
        return (ops.load_vae(env.model_path("vae", vae_name), env.settings),)


class CLIPSetLastLayer(Node):
    """Use an earlier layer of the text encoder ("CLIP skip"): -1 is the last layer, -2 the one before it."""

    display_name = "CLIP Set Last Layer"
    category = "conditioning"
    clip = Input("CLIP")
    stop_at_clip_layer = Int(-1, min=-24, max=-1)
    outputs = (Output("CLIP"),)

    def execute(self, clip: Any, stop_at_clip_layer: int) -> tuple[Any]:
        from dataclasses import replace

        return (replace(clip, stop_at_layer=stop_at_clip_layer),)


class CLIPEncode(Node):
    """Encode a prompt for the sampler. Supports ComfyUI's weighting, `(word:1.2)`, `(word)` = x1.1, `[word]`,
    and prompts longer than 77 tokens (encoded in windows of 75 and concatenated)."""

    display_name = "CLIP Text Encode (Prompt)"
    category = "conditioning"
    aliases = ("CLIPTextEncode",)
    text = String("", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded.")
    clip = Input("CLIP", tooltip="The CLIP model used for encoding the text.")
    outputs = (Output("CONDITIONING", tooltip="The encoded text, to guide the diffusion model."),)

    def execute(self, text: str, clip: Any) -> tuple[Any]:
        from ..diffusion import ops

        return (ops.encode_text(clip, text),)


NODES = [LoadCheckpoint, VAELoader, CLIPSetLastLayer, CLIPEncode]
