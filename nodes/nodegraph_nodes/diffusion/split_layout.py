"""The layouts of model parts kept in files of their own, and writing them (no reading here: split_files.py
reads; the loader's make_tiny_models writes through this module without importing the readers).

- a UNet file: the original ("LDM") UNet keys, with the checkpoint's `model.diffusion_model.` prefix or bare;
- a text-encoder file: one CLIP text model in Hugging Face naming with the `text_model.` level, plus
  `text_projection.weight` for OpenCLIP bigG (ComfyUI's CLIPSave layout, and how clip_l / clip_g files are published).
Files we write carry their config in the safetensors header (`keymap.METADATA_KEY`), as our checkpoints do.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .families import UNET_PREFIX
from .keymap import FORMAT_VERSION, METADATA_KEY, _config_dict, unet_to_original
from .tokenizer import EOS_TOKEN, tokenizer_spec

TextEncoder = CLIPTextModel | CLIPTextModelWithProjection


# A text encoder's width names it; each has the bundled config of the model that made it famous, and a pad token
# (OpenCLIP's tokenizers pad with "!", id 0). ComfyUI's CLIPSave suffixes: clip_l, clip_h, clip_g.
@dataclass(frozen=True)
class EncoderKind:
    name: str  # "l", "h", "g"
    width: int
    config: tuple[str, str]  # (bundled folder, component)
    with_projection: bool
    pad_token: str


ENCODER_KINDS = {
    768: EncoderKind("l", 768, ("sd15", "text_encoder"), False, EOS_TOKEN),
    1024: EncoderKind("h", 1024, ("sd21_v", "text_encoder"), False, "!"),
    1280: EncoderKind("g", 1280, ("sdxl_base", "text_encoder_2"), True, "!"),
}
KIND_BY_NAME = {k.name: k for k in ENCODER_KINDS.values()}
# The encoders of each family's CLIP, by kind, in the order of `cache_readers.ENCODER_NAMES` (SD2 names its one "l").
FAMILY_ENCODER_KINDS = {"sd1": ("l",), "sd2": ("h",), "sd2_base": ("h",), "sdxl": ("l", "g"), "sdxl_refiner": ("g",)}
TOKEN_EMBEDDING = "text_model.embeddings.token_embedding.weight"
# Constants some files carry that the transformers models do not hold as parameters.
IGNORED_SUFFIXES = (".position_ids", "logit_scale")


def hf_key(key: str) -> str:
    """Hugging Face CLIP naming with the `text_model.` level (files and transformers versions differ on it)."""
    for prefix in ("cond_stage_model.transformer.", "transformer."):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    if key.startswith(("text_model.", "text_projection")) or key == "logit_scale":
        return key
    return "text_model." + key


def write_unet_file(
    unet: UNet2DConditionModel, family: str, scheduler_config: Mapping[str, Any], path: str | Path,
    prefixed: bool = True, metadata: Mapping[str, str] | None = None,
) -> Path:
    """A UNet alone in the original layout: `model.diffusion_model.*` keys (as ComfyUI's ModelSave writes) or bare."""
    prefix = UNET_PREFIX if prefixed else ""
    state = {prefix + k: v for k, v in unet_to_original(unet.state_dict(), unet.config).items()}
    payload = {"kind": "unet", "family": family, "unet": _config_dict(unet.config), "scheduler": dict(scheduler_config)}
    return save(state, path, payload, metadata)


def write_text_encoder_file(
    model: TextEncoder, tokenizer: CLIPTokenizer, kind: str, path: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """One text encoder in Hugging Face naming with the `text_model.` level (ComfyUI's CLIPSave layout).

    `kind` ("l", "h", "g") is recorded, since a tiny model's width does not tell it."""
    if kind not in KIND_BY_NAME:
        raise ValueError(f"unknown text encoder kind {kind!r}; known: {', '.join(KIND_BY_NAME)}")
    state = {hf_key(k): v for k, v in model.state_dict().items() if not k.endswith(IGNORED_SUFFIXES)}
    payload = {"kind": "text_encoder", "encoder": kind, "config": _config_dict(model.config),
               "tokenizer": tokenizer_spec(tokenizer)}
    return save(state, path, payload, metadata)


# --- writing ------------------------------------------------------------------------------------------------------


def save(
    state: Mapping[str, torch.Tensor], path: str | Path, payload: Mapping[str, Any] | None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write tensors (moved to the CPU) as .safetensors with our config record and any extra metadata strings."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = dict(metadata or {})
    if payload is not None:
        header[METADATA_KEY] = json.dumps({"format": FORMAT_VERSION, **payload}, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata=header or None)
    return path
