"""The CONDITIONING value that flows between text encoders, ControlNet nodes and samplers.

One `Conditioning` is what a text encoder produced for one prompt, plus what later nodes attached to it.
It is immutable: nodes that add something (a ControlNet, size conditioning) return a new one with
`dataclasses.replace`, so cached upstream outputs are never modified in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class ControlSpec:
    """A ControlNet applied to a conditioning: the model, its hint image and when it acts.

    `hint` is an IMAGE tensor [B, H, W, 3] in 0..1 (ComfyUI's layout); the sampler resizes it to the latent's pixel
    size. `start_percent` / `end_percent` gate it by the fraction of the sigma schedule, as in ComfyUI.
    `apply_to_uncond`: set by the old ControlNetApply node, which sees only one conditioning; when the positive's
    last ControlNet has it and the negative has none, the sampler gives the negative the positive's ControlNets
    (ComfyUI's `control_apply_to_uncond`), so the old node steers both halves of classifier-free guidance.
    """

    controlnet: Any
    hint: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    apply_to_uncond: bool = False


@dataclass(frozen=True)
class Conditioning:
    """Cross-attention context for one prompt, with the model family's extra conditioning.

    embeds: [1, tokens, dim] (tokens is a multiple of 77 for long prompts).
    pooled: [1, pooled_dim] for SDXL-family models (the text_embeds of `added_cond_kwargs`), else None.
    time_ids: [1, 6] SDXL (original size, crop, target size) or [1, 5] refiner (..., aesthetic score), else None.
        None on an SDXL model means "derive defaults from the latent size" (what plain CLIPTextEncode gives).
    controls: ControlNets applied to this conditioning, in the order they were chained.
    concat_latent / concat_mask: set by InpaintModelConditioning for inpainting UNets: the raw VAE latent of the
        image with its masked area greyed out [B, 4, h, w], and the mask [B, 1, H, W] (see inpaint.concat_channels).
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None
    controls: tuple[ControlSpec, ...] = field(default_factory=tuple)
    concat_latent: torch.Tensor | None = None
    concat_mask: torch.Tensor | None = None

    def with_control(self, control: ControlSpec) -> "Conditioning":
        from dataclasses import replace

        return replace(self, controls=self.controls + (control,))

    def cache_nbytes(self) -> int:
        total = self.embeds.element_size() * self.embeds.nelement()
        for t in (self.pooled, self.time_ids, self.concat_latent, self.concat_mask):
            if t is not None:
                total += t.element_size() * t.nelement()
        return total
