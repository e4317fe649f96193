"""The MODEL, CLIP, VAE and CONTROL_NET values that flow between nodes: small handles, not weights.

A handle names a component of a file (a `ModelRef`) plus what nodes need to know without loading it (the family,
the sampler's schedule, the CLIP layer). The weights stay in the model cache; `ModelCache.use(handle.ref)` yields
them for the duration of one node. Handles are immutable: CLIPSetLastLayer returns a new one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .model_cache import ModelRef


@dataclass(frozen=True)
class ModelHandle:
    """MODEL: a denoising UNet, its family, the diffusers scheduler config it was trained with, and the factor
    between VAE latents and the UNet's latent space (latents between nodes are raw VAE latents, as in ComfyUI, so
    any VAE can decode them; the sampler scales on the way in and out)."""

    ref: ModelRef
    family: str
    scheduler_config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    latent_scale: float = 0.18215
    # the checkpoint's own preview factors (see preview.py), or None for its family's
    latent_rgb: Any = field(default=None, hash=False, compare=False)
    # LoRAs applied while the model is used (patching.LoraPatch), in the order they were loaded
    patches: tuple[Any, ...] = ()
    # CFG patches applied by the sampler's denoiser, in the order they were added (see guidance.py: RescaleCFG...)
    cfg_patches: tuple[Any, ...] = field(default=(), hash=False, compare=False)
    # DifferentialDiffusion's strength when that node patched this model (the noise mask becomes per-step), else None
    differential_diffusion: float | None = None

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class ClipHandle:
    """CLIP: the family's text encoder(s) and tokenizer(s); `stop_at_layer` is ComfyUI's CLIPSetLastLayer value
    (-1 the last layer, -2 the penultimate); None keeps the family's own choice (SDXL: penultimate)."""

    ref: ModelRef
    family: str
    stop_at_layer: int | None = None
    # LoRAs applied to the text encoders while they encode (patching.LoraPatch)
    patches: tuple[Any, ...] = ()
    # folders searched for `embedding:name` in prompts (the models roots' embeddings/ folders)
    embedding_dirs: tuple[str, ...] = ()

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class VaeHandle:
    """VAE: an AutoencoderKL. It encodes to and decodes from raw (unscaled) latents."""

    ref: ModelRef
    family: str

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class ControlNetHandle:
    """CONTROL_NET: a ControlNet model."""

    ref: ModelRef
    family: str

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class UpscaleModelHandle:
    """UPSCALE_MODEL: an image upscale model (a spandrel model descriptor in the cache), its architecture and
    scale."""

    ref: ModelRef
    architecture: str
    scale: int

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class ClipVisionHandle:
    """CLIP_VISION: a CLIP vision encoder (CLIPVisionModelWithProjection) in the model cache."""

    ref: ModelRef

    def cache_nbytes(self) -> int:
        return 0
