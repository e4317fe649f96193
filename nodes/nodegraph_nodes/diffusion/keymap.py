"""diffusers / transformers state dicts -> the original ("LDM") single-file key layout, for any block count.

diffusers ships converters from the original layout only. We need the other direction to write test checkpoints
the way users hold real ones (ComfyUI / A1111 single files), so that the loader is tested on the real layout.
Each `*_to_original` function takes a component's state dict (and its config where numbering depends on it) and
returns the original-layout tensors without a prefix; `write_single_file` puts the prefixes from `families.py`.
The tensors are the same objects (or exact reshapes / concatenations): nothing is recomputed.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .families import CONTROLNET_PREFIX, FAMILIES, UNET_PREFIX, VAE_PREFIX
from .tokenizer import tokenizer_spec

METADATA_KEY = "nodegraph.config"
FORMAT_VERSION = 1

StateDict = Mapping[str, torch.Tensor]

# ResnetBlock2D parameter names -> the original ResBlock's sequential indices
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# VAE resnets keep their names except the shortcut; the mid attention is a 1x1-conv block in the original
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_EMBEDDINGS = {  # time_embedding / add_embedding MLPs -> nn.Sequential(Linear, SiLU, Linear)
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",  # unCLIP's image-embedding input (class_embed_type "projection")
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _rename(name: str, table: Mapping[str, str]) -> str:
    """Replace the leading module path of `name` by its entry in `table` (longest match first)."""
    for old in sorted(table, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return table[old] + name[len(old):]
    return name


def _unet_block_key(key: str, config: Mapping[str, Any]) -> str | None:
    """Original name of a down/mid/up block parameter of a UNet or ControlNet, None if `key` is not one.

    Original numbering: input_blocks.0 is conv_in, then each down block has `layers_per_block` (resnet[, attention])
    entries and, except the last, one downsampler entry; output_blocks hold `layers_per_block + 1` entries per up
    block, the upsampler sitting after the resnet (and attention) of the block's last entry.
    """
    per_down = config["layers_per_block"] + 1
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * per_down + layer
        return f"input_blocks.{index}.0.{_rename(rest, _UNET_RESNET)}" if kind == "resnets" else \
            f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per_down}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        kind, index, rest = m[1], int(m[2]), m[3]
        # resnet 0, attention 0, resnet 1 -> middle_block.0, .1, .2
        return f"middle_block.{2 * index}.{_rename(rest, _UNET_RESNET)}" if kind == "resnets" else \
            f"middle_block.1.{rest}"
    up_types = config.get("up_block_types") or ()
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * per_down + layer
        return f"output_blocks.{index}.0.{_rename(rest, _UNET_RESNET)}" if kind == "resnets" else \
            f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        slot = 2 if "CrossAttn" in up_types[block] else 1  # after the attention when the block has one
        return f"output_blocks.{block * per_down + per_down - 1}.{slot}.conv.{m[2]}"
    return None


def unet_to_original(state_dict: StateDict, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel weights -> original UNetModel keys (without `model.diffusion_model.`)."""
    out = {}
    for key, value in state_dict.items():
        name = _unet_block_key(key, config) or _rename(key, _EMBEDDINGS)
        if name == key:
            raise KeyError(f"no original-layout name for UNet parameter {key!r}")
        out[name] = value
    return out


def controlnet_to_original(state_dict: StateDict, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """ControlNetModel weights -> original ControlNet keys (without `control_model.`).

    Beyond the UNet encoder: one zero_conv per down-path feature map, middle_block_out, and the hint encoder
    input_hint_block as conv, SiLU, conv, SiLU, ... (so convs sit at even indices).
    """
    n_hint_blocks = sum(1 for k in state_dict if re.fullmatch(r"controlnet_cond_embedding\.blocks\.\d+\.weight", k))
    out = {}
    for key, value in state_dict.items():
        if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
            name = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.match(r"controlnet_mid_block\.(.+)", key):
            name = f"middle_block_out.0.{m[1]}"
        elif m := re.match(r"controlnet_cond_embedding\.conv_in\.(.+)", key):
            name = f"input_hint_block.0.{m[1]}"
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", key):
            name = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        elif m := re.match(r"controlnet_cond_embedding\.conv_out\.(.+)", key):
            name = f"input_hint_block.{2 * (n_hint_blocks + 1)}.{m[1]}"
        else:
            name = _unet_block_key(key, config) or _rename(key, _EMBEDDINGS)
            if name == key:
                raise KeyError(f"no original-layout name for ControlNet parameter {key!r}")
        out[name] = value
    return out


def vae_to_original(state_dict: StateDict, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """AutoencoderKL weights -> original AutoencoderKL keys (without `first_stage_model.`).

    Decoder blocks are numbered from the lowest resolution in diffusers and from the highest in the original;
    the mid-block attention is linear in diffusers and 1x1 convolutions in the original.
    """
    n_up = len(config["up_block_types"])
    out = {}
    for key, value in state_dict.items():
        name = key
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"encoder.down.{m[1]}.block.{m[2]}.{_rename(m[3], _VAE_RESNET)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            name = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{_rename(m[3], _VAE_RESNET)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            name = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename(m[3], _VAE_RESNET)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            name = f"{m[1]}.mid.attn_1.{_rename(m[2], _VAE_ATTENTION)}"
            if value.ndim == 2:  # linear [out, in] -> 1x1 conv [out, in, 1, 1]
                value = value.reshape(*value.shape, 1, 1)
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
            name = f"{m[1]}.norm_out.{m[2]}"
        out[name] = value
    return out


def clip_to_original(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """CLIPTextModel weights -> the Hugging Face layout the original SD1 / SDXL files embed (`text_model.*`).

    transformers >= 5.6 saves CLIPTextModel without the `text_model.` level; the files always have it.
    """
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state_dict.items()}


_OPEN_CLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPEN_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def open_clip_to_original(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """CLIPTextModel(WithProjection) weights -> OpenCLIP text tower keys (SD2's ViT-H, SDXL's ViT-bigG).

    OpenCLIP fuses q, k, v into `attn.in_proj_weight` / `in_proj_bias` (stacked in that order) and applies
    `text_projection` as `x @ P`, the transpose of a Linear weight.
    """
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for full_key, value in state_dict.items():
        key = full_key.removeprefix("text_model.")  # present or not depending on the class and transformers version
        if key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key in _OPEN_CLIP_TOP:
            out[_OPEN_CLIP_TOP[key]] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            fused.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.+)", key):
            out[f"transformer.resblocks.{m[1]}.{_rename(m[2], _OPEN_CLIP_LAYER)}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text encoder parameter {key!r}")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _config_dict(config: Any) -> dict[str, Any]:
    """A model config as plain JSON-able data, without the library-version fields that would make bytes vary."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    drop = {"_diffusers_version", "transformers_version", "_use_default_values", "_name_or_path"}
    return {k: v for k, v in data.items() if k not in drop}


def _metadata(payload: dict[str, Any]) -> dict[str, str]:
    return {METADATA_KEY: json.dumps({"format": FORMAT_VERSION, **payload}, sort_keys=True)}


def checkpoint_state_dict(components: Any) -> dict[str, torch.Tensor]:
    """All weights of a `tiny.Components` in the original single-file layout, prefixes from its family."""
    family = FAMILIES[components.family]
    out = {UNET_PREFIX + k: v for k, v in unet_to_original(components.unet.state_dict(), components.unet.config).items()}
    out.update({VAE_PREFIX + k: v for k, v in vae_to_original(components.vae.state_dict(), components.vae.config).items()})
    for spec, encoder in zip(family.text_encoders, components.text_encoders, strict=True):
        convert = open_clip_to_original if spec.layout == "open_clip" else clip_to_original
        out.update({spec.prefix + k: v for k, v in convert(encoder.state_dict()).items()})
    return out


def write_single_file(components: Any, path: str | Path) -> Path:
    """Save a `tiny.Components` as one original-layout .safetensors file, the way users hold real checkpoints.

    The diffusers configs, tokenizer specs and family go into the header (`__metadata__["nodegraph.config"]`) so
    the loader rebuilds a non-standard (tiny) architecture exactly instead of guessing it from shapes.
    """
    family = FAMILIES[components.family]
    payload = {
        "kind": "checkpoint",
        "family": components.family,
        "unet": _config_dict(components.unet.config),
        "vae": _config_dict(components.vae.config),
        "text_encoders": {
            spec.subfolder: _config_dict(encoder.config)
            for spec, encoder in zip(family.text_encoders, components.text_encoders, strict=True)
        },
        "tokenizers": {
            spec.subfolder: tokenizer_spec(tok)
            for spec, tok in zip(family.text_encoders, components.tokenizers, strict=True)
        },
        "scheduler": dict(components.scheduler_config),
    }
    if components.latent_rgb is not None:
        factors, bias = components.latent_rgb
        payload["latent_rgb"] = {"factors": factors, "bias": bias}
    state = checkpoint_state_dict(components)
    if getattr(components, "clip_vision", None) is not None:  # unCLIP: its image encoder, in Stability's layout
        from .unclip import unclip_file_extras

        extra_state, payload["clip_vision"] = unclip_file_extras(components.clip_vision)
        state.update(extra_state)
    return _save(state, path, payload)


def write_controlnet_file(controlnet: torch.nn.Module, path: str | Path, family: str = "controlnet_sd1") -> Path:
    """Save a ControlNetModel as an original-layout (`control_model.*`) .safetensors file with its config."""
    sd = controlnet_to_original(controlnet.state_dict(), controlnet.config)
    payload = {"kind": "controlnet", "family": family, "controlnet": _config_dict(controlnet.config)}
    return _save({CONTROLNET_PREFIX + k: v for k, v in sd.items()}, path, payload)


def write_vae_file(vae: torch.nn.Module, path: str | Path) -> Path:
    """Save an AutoencoderKL as a standalone original-layout VAE file (keys `encoder.*`, `decoder.*`, no prefix)."""
    payload = {"kind": "vae", "vae": _config_dict(vae.config)}
    return _save(vae_to_original(vae.state_dict(), vae.config), path, payload)


def _save(state_dict: Mapping[str, torch.Tensor], path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata=_metadata(payload))
    return path
