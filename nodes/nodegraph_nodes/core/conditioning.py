"""ComfyUI's conditioning nodes: combine, concat, average, zero out, and where / when / how strongly a prompt acts.

A CONDITIONING value is one `Conditioning` or a tuple of them (after ConditioningCombine); every node here works on
each entry as ComfyUI's nodes work on each [embeds, options] pair, and returns new values (inputs are never changed).
The sampler applies areas, masks, strengths and timestep ranges (nodegraph_nodes.diffusion.regions).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from nodegraph.engine import MAX_RESOLUTION, Combo, Float, Input, Int, Node, Output


def _strength() -> Float:
    return Float(1.0, min=0.0, max=10.0, step=0.01)


def _map(conditioning: Any, **changes: Any) -> Any:
    from ..diffusion.conditioning import map_entries

    return map_entries(conditioning, lambda c: replace(c, **changes))


class ConditioningCombine(Node):
    """Both conditionings together: the sampler evaluates every prompt and averages their predictions (per pixel,
    by area, mask and strength)."""

    display_name = "Conditioning (Combine)"
    category = "conditioning"
    conditioning_1 = Input("CONDITIONING")
    conditioning_2 = Input("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning_1: Any, conditioning_2: Any) -> tuple[Any]:
        from ..diffusion.conditioning import entries

        return (entries(conditioning_1) + entries(conditioning_2),)


class ConditioningConcat(Node):
    """Append the tokens of conditioning_from's first prompt to each prompt of conditioning_to."""

    display_name = "Conditioning (Concat)"
    category = "conditioning"
    conditioning_to = Input("CONDITIONING")
    conditioning_from = Input("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning_to: Any, conditioning_from: Any) -> tuple[Any]:
        import torch

        from ..diffusion.conditioning import entries, map_entries

        source = entries(conditioning_from)[0].embeds
        return (map_entries(conditioning_to, lambda c: replace(c, embeds=torch.cat((c.embeds, source), dim=1))),)


class ConditioningAverage(Node):
    """Mix each prompt of conditioning_to with conditioning_from's first prompt: to * strength + from * (1 -
    strength), token by token (from is cut or zero-padded to to's length); pooled outputs mix the same way."""

    display_name = "Conditioning (Average)"
    category = "conditioning"
    conditioning_to = Input("CONDITIONING")
    conditioning_from = Input("CONDITIONING")
    conditioning_to_strength = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning_to: Any, conditioning_from: Any, conditioning_to_strength: float) -> tuple[Any]:
        import torch

        from ..diffusion.conditioning import entries, map_entries

        source = entries(conditioning_from)[0]
        weight = conditioning_to_strength

        def average(c: Any) -> Any:
            tokens = c.embeds.shape[1]
            other = source.embeds[:, :tokens]
            if other.shape[1] < tokens:
                pad = other.new_zeros(other.shape[0], tokens - other.shape[1], other.shape[2])
                other = torch.cat([other, pad], dim=1)
            pooled = c.pooled
            if source.pooled is not None:
                pooled = source.pooled if c.pooled is None else c.pooled * weight + source.pooled * (1 - weight)
            return replace(c, embeds=c.embeds * weight + other * (1 - weight), pooled=pooled)

        return (map_entries(conditioning_to, average),)


class ConditioningZeroOut(Node):
    """The same conditioning with all-zero embeddings (and pooled output): "no prompt" for models trained so."""

    category = "advanced/conditioning"
    conditioning = Input("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: Any) -> tuple[Any]:
        import torch

        from ..diffusion.conditioning import map_entries

        def zero(c: Any) -> Any:
            pooled = None if c.pooled is None else torch.zeros_like(c.pooled)
            return replace(c, embeds=torch.zeros_like(c.embeds), pooled=pooled)

        return (map_entries(conditioning, zero),)


class ConditioningSetArea(Node):
    """Make the prompt act only on a width x height rectangle at (x, y) pixels, with a strength (its weight where
    it overlaps other prompts)."""

    display_name = "Conditioning (Set Area)"
    category = "conditioning"
    conditioning = Input("CONDITIONING")
    width = Int(64, min=64, max=MAX_RESOLUTION, step=8)
    height = Int(64, min=64, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    strength = _strength()
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning, width, height, x, y, strength) -> tuple[Any]:
        area = (height // 8, width // 8, y // 8, x // 8)
        return (_map(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


class ConditioningSetAreaPercentage(Node):
    """Make the prompt act only on a rectangle given as fractions of the image's width and height."""

    display_name = "Conditioning (Set Area with Percentage)"
    category = "conditioning"
    conditioning = Input("CONDITIONING")
    width = Float(1.0, min=0.0, max=1.0, step=0.01)
    height = Float(1.0, min=0.0, max=1.0, step=0.01)
    x = Float(0.0, min=0.0, max=1.0, step=0.01)
    y = Float(0.0, min=0.0, max=1.0, step=0.01)
    strength = _strength()
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning, width, height, x, y, strength) -> tuple[Any]:
        area = ("percentage", height, width, y, x)
        return (_map(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


class ConditioningSetAreaStrength(Node):
    """Set the prompt's strength: its weight where it overlaps other prompts."""

    category = "conditioning"
    conditioning = Input("CONDITIONING")
    strength = _strength()
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning, strength) -> tuple[Any]:
        return (_map(conditioning, strength=strength),)


class ConditioningSetMask(Node):
    """Make the prompt act through a mask (its weight per pixel, times strength); "mask bounds" also restricts the
    model call to the mask's bounding box."""

    display_name = "Conditioning (Set Mask)"
    category = "conditioning"
    conditioning = Input("CONDITIONING")
    mask = Input("MASK")
    strength = _strength()
    set_cond_area = Combo(["default", "mask bounds"])
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning, mask, strength, set_cond_area) -> tuple[Any]:
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        return (_map(conditioning, mask=mask, mask_strength=strength,
                     set_area_to_bounds=set_cond_area != "default"),)


class ConditioningSetTimestepRange(Node):
    """Make the prompt act only between two fractions of the sampling schedule (0 = start, 1 = end)."""

    category = "advanced/conditioning"
    conditioning = Input("CONDITIONING")
    start = Float(0.0, min=0.0, max=1.0, step=0.001)
    end = Float(1.0, min=0.0, max=1.0, step=0.001)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning, start, end) -> tuple[Any]:
        return (_map(conditioning, start_percent=start, end_percent=end),)


NODES = [
    ConditioningCombine, ConditioningConcat, ConditioningAverage, ConditioningZeroOut, ConditioningSetArea,
    ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask, ConditioningSetTimestepRange,
]
