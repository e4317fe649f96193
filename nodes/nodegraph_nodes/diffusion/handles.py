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
    """MODEL: a denoising UNet, its family and the diffusers scheduler config it was trained with."""

    ref: ModelRef
    family: str
    scheduler_config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class ClipHandle:
    """CLIP: the family's text encoder(s) and tokenizer(s); `stop_at_layer` is ComfyUI's CLIPSetLastLayer value
    (-1 the last layer, -2 the penultimate); None keeps the family's own choice (SDXL: penultimate)."""

    ref: ModelRef
    family: str
    stop_at_layer: int | None = None

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class VaeHandle:
    """VAE: an AutoencoderKL; `scaling_factor` maps its latents to the UNet's scale."""

    ref: ModelRef
    family: str
    scaling_factor: float

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class ControlNetHandle:
    """CONTROL_NET: a ControlNet model."""

    ref: ModelRef
    family: str

    def cache_nbytes(self) -> int:
        return 0
