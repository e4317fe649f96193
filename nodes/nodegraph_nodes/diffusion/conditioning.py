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
    # Where and when this prompt acts (ComfyUI's area / strength / mask / timestep-range conditioning; see regions.py):
    # area: (height, width, y, x) in latent cells, or ("percentage", height, width, y, x) as fractions of the latent.
    area: tuple | None = None
    strength: float = 1.0
    mask: torch.Tensor | None = None  # [B, H, W] or [H, W], any size: resized to the latent
    mask_strength: float = 1.0
    set_area_to_bounds: bool = False  # the area becomes the mask's bounding box
    start_percent: float = 0.0  # acts while the schedule is between these fractions
    end_percent: float = 1.0
    # GLIGENTextBoxApply's text boxes: (GligenHandle, ((pooled [1, D], height, width, y, x) in latent cells, ...)),
    # applied by the sampler to this conditioning's own UNet calls (gligen.py)
    gligen: tuple | None = None

    @property
    def is_regional(self) -> bool:
        """True when the prompt does not simply act everywhere and always."""
        return (self.area is not None or self.mask is not None or self.start_percent > 0.0
                or self.end_percent < 1.0 or self.gligen is not None)
    concat_latent: torch.Tensor | None = None
    concat_mask: torch.Tensor | None = None
    # unCLIPConditioning entries (unclip.UnclipSpec), in the order applied; only unCLIP UNets read them
    unclip: tuple[Any, ...] = ()

    def with_control(self, control: ControlSpec) -> "Conditioning":
        from dataclasses import replace

        return replace(self, controls=self.controls + (control,))

    def cache_nbytes(self) -> int:
        total = self.embeds.element_size() * self.embeds.nelement()
        for t in (self.pooled, self.time_ids, self.mask, self.concat_latent, self.concat_mask):
            if t is not None:
                total += t.element_size() * t.nelement()
        return total + sum(u.cache_nbytes() for u in self.unclip)


# A CONDITIONING value is one Conditioning or, after ConditioningCombine, a tuple of them (ComfyUI's list of
# [embeds, options] pairs): every entry is evaluated by the sampler and the results are averaged per pixel.
Conditionings = Conditioning | tuple[Conditioning, ...]


def entries(value: Conditionings) -> tuple[Conditioning, ...]:
    """The entries of a CONDITIONING value."""
    if isinstance(value, Conditioning):
        return (value,)
    if isinstance(value, (tuple, list)) and value and all(isinstance(c, Conditioning) for c in value):
        return tuple(value)
    raise TypeError(f"expected a CONDITIONING value, got {type(value).__name__}")


def from_entries(items: "list[Conditioning] | tuple[Conditioning, ...]") -> Conditionings:
    """A CONDITIONING value of these entries: a single one stays a plain Conditioning."""
    items = tuple(items)
    return items[0] if len(items) == 1 else items


def map_entries(value: Conditionings, fn: "Any") -> Conditionings:
    """Apply `fn` to every entry (what ComfyUI's conditioning nodes do to each [embeds, options] pair)."""
    return from_entries([fn(c) for c in entries(value)])
