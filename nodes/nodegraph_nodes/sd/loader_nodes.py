"""Loader nodes: checkpoints, standalone VAEs, CLIP layer selection, text encoding."""
from __future__ import annotations

from typing import Any

from nodegraph.engine import Combo, Float, Folders, Input, Int, Node, Output, String


def _models(kind: str):
    """Combo choices: the model files of one kind in the configured models roots."""

    def choices(env: Folders | None) -> list[str]:
        return env.list_models(kind) if env is not None else []

    return choices


def _file_fingerprint(env: Folders | None, kind: str, name: str) -> Any:
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
    def fingerprint(cls, env: Folders | None, ckpt_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "checkpoints", ckpt_name)

    def execute(self, ckpt_name: str) -> tuple[Any, Any, Any]:
        from ..diffusion import ops

        env = self.context.env
        model, clip, vae = ops.load_checkpoint(self.context.runtime, env.model_path("checkpoints", ckpt_name))
        return model, _with_embeddings(clip, env), vae


def _embedding_dirs(env: Folders | None) -> tuple[str, ...]:
    try:
        return tuple(str(p) for p in env.model_roots("embeddings"))
    except (AttributeError, KeyError):
        return ()


def _with_embeddings(clip: Any, env: Folders | None) -> Any:
    """The CLIP searches the models roots' embeddings/ folders for `embedding:name` (as ComfyUI's checkpoint
    loader gives its CLIP the embeddings directory)."""
    from dataclasses import replace

    return replace(clip, embedding_dirs=_embedding_dirs(env))


def _strength(what: str) -> Float:
    return Float(1.0, min=-100.0, max=100.0, step=0.01,
                 tooltip=f"How strongly to modify the {what} model. This value can be negative.")


class LoraLoader(Node):
    """LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as
    applying styles. Multiple LoRA nodes can be linked together."""

    display_name = "Load LoRA"
    category = "loaders"
    model = Input("MODEL", tooltip="The diffusion model the LoRA will be applied to.")
    clip = Input("CLIP", tooltip="The CLIP model the LoRA will be applied to.")
    lora_name = Combo(_models("loras"), tooltip="The name of the LoRA.")
    strength_model = _strength("diffusion")
    strength_clip = _strength("CLIP")
    outputs = (
        Output("MODEL", tooltip="The modified diffusion model."),
        Output("CLIP", tooltip="The modified CLIP model."),
    )

    @classmethod
    def fingerprint(cls, env: Folders | None, lora_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "loras", lora_name)

    def execute(self, model: Any, clip: Any, lora_name: str, strength_model: float, strength_clip: float):
        if strength_model == 0 and strength_clip == 0:
            return model, clip
        from ..diffusion import ops

        env = self.context.env
        return ops.load_lora(self.context.runtime, model, clip, env.model_path("loras", lora_name), strength_model,
                             strength_clip)


class LoraLoaderModelOnly(Node):
    """LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as
    applying styles. Multiple LoRA nodes can be linked together."""

    display_name = "LoraLoaderModelOnly"
    category = "loaders"
    model = Input("MODEL")
    lora_name = Combo(_models("loras"))
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01)
    outputs = (Output("MODEL", tooltip="The modified diffusion model."),)

    @classmethod
    def fingerprint(cls, env: Folders | None, lora_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "loras", lora_name)

    def execute(self, model: Any, lora_name: str, strength_model: float):
        if strength_model == 0:
            return (model,)
        from ..diffusion import ops

        env = self.context.env
        patched, _ = ops.load_lora(self.context.runtime, model, None, env.model_path("loras", lora_name),
                                   strength_model, 0.0)
        return (patched,)


class VAELoader(Node):
    """Load a standalone VAE (original layout .safetensors, or a diffusers AutoencoderKL folder)."""

    display_name = "Load VAE"
    category = "loaders"
    vae_name = Combo(_models("vae"), tooltip="The VAE to load, from the vae folder.")
    outputs = (Output("VAE"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, vae_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "vae", vae_name)

    def execute(self, vae_name: str) -> tuple[Any]:
        from ..diffusion import ops

        env = self.context.env
        return (ops.load_vae(self.context.runtime, env.model_path("vae", vae_name)),)


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

    @classmethod
    def fingerprint(cls, env: Folders | None, text: Any = "", **_: Any) -> Any:
        """A prompt naming embeddings depends on their files (replaced, added or removed)."""
        if not isinstance(text, str) or "embedding:" not in text:
            return None
        from pathlib import Path

        stats = []
        for folder in _embedding_dirs(env):
            root = Path(folder)
            if root.is_dir():
                stats += sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                                for p in root.rglob("*") if p.is_file())
        return tuple(stats)

    def execute(self, text: str, clip: Any) -> tuple[Any]:
        from ..diffusion import ops

        return (ops.encode_text(self.context.runtime, clip, text),)


NODES = [LoadCheckpoint, VAELoader, LoraLoader, LoraLoaderModelOnly, CLIPSetLastLayer, CLIPEncode]
