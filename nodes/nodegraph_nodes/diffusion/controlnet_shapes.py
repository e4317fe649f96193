"""A ControlNet's diffusers config, read off the tensor shapes of a file in diffusers key layout.

Many ControlNets are published as the lone `diffusion_pytorch_model.safetensors` of a diffusers ControlNetModel,
with diffusers keys (`controlnet_cond_embedding.*`, `down_blocks.*`, `controlnet_down_blocks.*`) and without the
`config.json` that went beside it. Nearly the whole architecture is written in the shapes, so any size loads:

- `conv_in` [C0, in_channels, 3, 3]; `down_blocks.i.resnets.0.conv1` [Ci, ...] gives block_out_channels;
  the number of `down_blocks.i.resnets.*` gives layers_per_block; `down_blocks.i.attentions` present makes block i
  a CrossAttnDownBlock2D; the number of `...attentions.0.transformer_blocks.*` is its transformer depth;
- `attn2.to_k` [inner, cross_attention_dim]; `proj_in` 2-D (linear, SD2/SDXL) or 4-D (1x1 conv, SD1);
- `controlnet_cond_embedding.conv_in` [E0, conditioning_channels, 3, 3], `.blocks.{2k+1}` [E(k+1), ...] the hint
  encoder's widths;
- `add_embedding.linear_1` [_, P] means SDXL's text_time conditioning with P = pooled width + 6 time embeddings.

Three settings leave no trace in the weights, and the conventions of the families fill them in:
- the number of attention heads: 8 per block with a 1x1-conv projection (SD1), else 64 channels per head (SD2 and
  SDXL), the same rule ComfyUI's SD1 / SD2 / SDXL model configs follow;
- the width of each sinusoidal time-id embedding (SDXL's `addition_time_embed_dim`): SDXL's 256 whenever P leaves
  room for it (P > 6 * 256, every real SDXL ControlNet), else P / 12 (a pooled width equal to the six time
  embeddings, which is how nodegraph's tiny SDXL models are built);
- GroupNorm's group count (32 in every Stable Diffusion model) and the other diffusers defaults.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DIFFUSERS_CONTROLNET_KEY = "controlnet_cond_embedding.conv_in.weight"
SD1_HEADS = 8
NORM_GROUPS = 32
HEAD_CHANNELS = 64
SDXL_TIME_EMBED_DIM = 256
SDXL_TIME_IDS = 6


class ControlNetShapeError(ValueError):
    """The shapes do not describe a ControlNet diffusers can build."""


def is_diffusers_controlnet(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    return DIFFUSERS_CONTROLNET_KEY in shapes and "down_blocks.0.resnets.0.conv1.weight" in shapes


def _count(shapes: Mapping[str, Any], pattern: str) -> int:
    """How many consecutive indices n from 0 have a key starting with pattern.format(n)."""
    n = 0
    while any(key.startswith(pattern.format(n)) for key in shapes):
        n += 1
    return n


def _shape(shapes: Mapping[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ControlNetShapeError(f"a diffusers-layout ControlNet needs the tensor {key!r}, which is missing")
    return shapes[key]


def controlnet_config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """The diffusers ControlNetModel config of a diffusers-key state dict, from its key -> shape map."""
    shapes = {k: tuple(v) for k, v in shapes.items()}
    blocks = _count(shapes, "down_blocks.{}.")
    if blocks == 0:
        raise ControlNetShapeError("no down_blocks.* tensors: not a diffusers-layout ControlNet")
    conv_in = _shape(shapes, "conv_in.weight")
    channels = [_shape(shapes, f"down_blocks.{i}.resnets.0.conv1.weight")[0] for i in range(blocks)]
    if conv_in[0] != channels[0]:
        raise ControlNetShapeError(f"conv_in gives {conv_in[0]} channels but down_blocks.0 has {channels[0]}")
    odd = [c for c in channels if c % NORM_GROUPS]
    if odd:
        raise ControlNetShapeError(
            f"GroupNorm's group count is not stored in the weights; it is taken as Stable Diffusion's {NORM_GROUPS}, "
            f"which does not divide the block widths {odd}"
        )
    resnets = {_count(shapes, f"down_blocks.{i}.resnets.{{}}.") for i in range(blocks)}
    if len(resnets) != 1:
        raise ControlNetShapeError(f"down blocks with different numbers of resnets {sorted(resnets)}: not supported")
    has_attention = [f"down_blocks.{i}.attentions.0.proj_in.weight" in shapes for i in range(blocks)]
    mid_attention = "mid_block.attentions.0.proj_in.weight" in shapes
    attention_prefixes = [f"down_blocks.{i}.attentions.0." for i in range(blocks) if has_attention[i]]
    if mid_attention:
        attention_prefixes.append("mid_block.attentions.0.")
    if not attention_prefixes:
        raise ControlNetShapeError("no cross-attention anywhere: not a Stable Diffusion ControlNet")
    first = attention_prefixes[0]
    linear = len(_shape(shapes, first + "proj_in.weight")) == 2
    cross_attention_dim = _shape(shapes, first + "transformer_blocks.0.attn2.to_k.weight")[1]

    depths = [_count(shapes, f"down_blocks.{i}.attentions.0.transformer_blocks.{{}}.") if has_attention[i] else 1
              for i in range(blocks)]
    if mid_attention:
        mid_depth = _count(shapes, "mid_block.attentions.0.transformer_blocks.{}.")
        if mid_depth != depths[-1]:
            # diffusers gives the mid block the last down block's depth; a file with another cannot be built
            raise ControlNetShapeError(
                f"the mid block has {mid_depth} transformer layers and the last down block {depths[-1]}; diffusers' "
                "ControlNetModel needs them equal"
            )

    heads = []
    for i, width in enumerate(channels):
        if not linear:
            heads.append(SD1_HEADS)
        elif width % HEAD_CHANNELS == 0:
            heads.append(width // HEAD_CHANNELS)
        elif has_attention[i] or (i == blocks - 1 and mid_attention):
            raise ControlNetShapeError(
                f"the number of attention heads is not stored in the weights; for linear-projection (SD2 / SDXL) "
                f"ControlNets it is taken as {HEAD_CHANNELS} channels per head, and block {i} has {width} channels"
            )
        else:
            heads.append(1)  # a block without attention: the value is unused

    embedding_widths = [_shape(shapes, "controlnet_cond_embedding.conv_in.weight")[0]]
    hint_blocks = _count(shapes, "controlnet_cond_embedding.blocks.{}.")
    for k in range(1, hint_blocks, 2):
        embedding_widths.append(_shape(shapes, f"controlnet_cond_embedding.blocks.{k}.weight")[0])

    time_embed = _shape(shapes, "time_embedding.linear_1.weight")
    if time_embed != (4 * channels[0], channels[0]):
        raise ControlNetShapeError(
            f"time_embedding.linear_1 is {list(time_embed)}; diffusers builds [{4 * channels[0]}, {channels[0]}]"
        )

    config: dict[str, Any] = {
        "_class_name": "ControlNetModel",
        "in_channels": conv_in[1],
        "conditioning_channels": _shape(shapes, DIFFUSERS_CONTROLNET_KEY)[1],
        "conditioning_embedding_out_channels": embedding_widths,
        "block_out_channels": channels,
        "layers_per_block": resnets.pop(),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attention],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_attention else "UNetMidBlock2D",
        "transformer_layers_per_block": depths,
        "attention_head_dim": heads,  # diffusers' name for the number of heads in UNet-style models
        "use_linear_projection": linear,
        "cross_attention_dim": cross_attention_dim,
    }
    if "add_embedding.linear_1.weight" in shapes:
        width = shapes["add_embedding.linear_1.weight"][1]
        if width > SDXL_TIME_IDS * SDXL_TIME_EMBED_DIM:
            time_dim = SDXL_TIME_EMBED_DIM
        elif width % (2 * SDXL_TIME_IDS) == 0:
            time_dim = width // (2 * SDXL_TIME_IDS)
        else:
            raise ControlNetShapeError(
                f"add_embedding takes {width} inputs: too narrow for SDXL's 6 x 256 time embeddings and not "
                "divisible by 12, so the width of the time-id embedding cannot be told"
            )
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=width,
        )
    elif any(re.match(r"(class_embedding|add_embedding)\.", k) for k in shapes):
        raise ControlNetShapeError("class / addition embeddings other than SDXL's text_time are not supported")
    return config
