"""Reading model components from files of their own: a UNet alone, a text encoder alone (ComfyUI's
diffusion_models/ and text_encoders/ folders); writing them is split_layout.py's.

The layouts are the ones these files have in the wild:
- a UNet file holds the original ("LDM") UNet keys, either with the checkpoint's `model.diffusion_model.` prefix or
  bare (`input_blocks.0.0.weight`, ...). A whole checkpoint also works: only its UNet keys are read.
- a text-encoder file holds one CLIP text model in Hugging Face naming (`text_model.encoder.layers.N...`, plus
  `text_projection.weight` for OpenCLIP bigG), as ComfyUI's CLIPSave writes them and as clip_l / clip_g files are
  published. Which encoder it is (CLIP-L, OpenCLIP-H, OpenCLIP-bigG) is read off its width: 768, 1024, 1280.
Files we write carry their diffusers config in the safetensors header (`keymap.METADATA_KEY`) as our checkpoints
do, so tiny test models load exactly; files without it get the bundled config of the family recognised from keys.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .families import FAMILIES, UNET_PREFIX, Family, describe_keys
from .checkpoint_files import CheckpointError, SingleFile, _assemble, _empty
from .split_layout import (
    ENCODER_KINDS, IGNORED_SUFFIXES, KIND_BY_NAME, TOKEN_EMBEDDING, EncoderKind, TextEncoder, hf_key,
)
from .tokenizer import clip_tokenizer, tokenizer_from_spec

@dataclass
class TextEncoderFile:
    """One text encoder read from a file: its kind ("l", "h", "g"), the model and a tokenizer for it."""

    kind: str
    model: TextEncoder
    tokenizer: CLIPTokenizer


# --- UNet files ---------------------------------------------------------------------------------------------------


def detect_unet_family(
    shapes: Mapping[str, tuple[int, ...]], tensor: Any = None
) -> Family | None:
    """The family of a UNet alone: the families' checkpoint signatures restricted to their UNet facts (SD1 / SD2
    by the cross-attention width, SDXL base / refiner by the size-conditioning width, SD2 v / base by the value
    heuristic). `shapes` has the `model.diffusion_model.` prefix."""
    for family in FAMILIES.values():
        for rules in family.signatures:
            unet_rules = [r for r in rules if r.key.startswith(UNET_PREFIX)]
            if unet_rules and all(r.holds(shapes, tensor) for r in unet_rules):
                return family
    return None


def read_unet_file(path: str | Path) -> tuple[Family, UNet2DConditionModel, dict[str, Any]]:
    """(family, UNet, scheduler config) from a UNet file (prefixed or bare original keys) or a whole checkpoint."""
    file = SingleFile(path)
    prefixed = {k: k if k.startswith(UNET_PREFIX) else UNET_PREFIX + k for k in file.shapes}
    if any(k.startswith(UNET_PREFIX) for k in file.shapes):  # a checkpoint, or a prefixed UNet file
        prefixed = {k: k for k in file.shapes if k.startswith(UNET_PREFIX)}
    actual = {v: k for k, v in prefixed.items()}
    shapes = {v: file.shapes[k] for k, v in prefixed.items()}
    header = file.header()
    if header is not None:
        if header.get("kind") not in ("unet", "checkpoint"):
            raise CheckpointError(f"{file.path}: this is a {header.get('kind')} file, not a diffusion model")
        family = FAMILIES[header["family"]]
        config = dict(header["unet"])
        scheduler = dict(header.get("scheduler") or family.config("scheduler"))
    else:
        family = detect_unet_family(shapes, lambda key: file.tensor(actual[key]))
        if family is None:
            raise CheckpointError(
                f"{file.path}: not a diffusion model (UNet) of a supported family. Found {describe_keys(file.shapes)}. "
                "Supported: the UNet of " + ", ".join(FAMILIES) + " in the original layout, with or without the "
                f"{UNET_PREFIX!r} prefix."
            )
        config = family.config("unet")
        scheduler = family.config("scheduler")
    state = {key: file.tensor(actual[key]) for key in shapes}
    unet = _assemble(
        "unet", _empty(lambda: UNet2DConditionModel.from_config(config)), convert_ldm_unet_checkpoint(state, config),
        file.path, None,
    )
    return family, unet, scheduler


# --- text-encoder files ------------------------------------------------------------------------------------------


def _text_encoder_kind(file: SingleFile, keys: Mapping[str, str]) -> EncoderKind:
    header = file.header()
    if header is not None:
        if header.get("kind") != "text_encoder":
            raise CheckpointError(f"{file.path}: this is a {header.get('kind')} file, not a text encoder")
        kind = KIND_BY_NAME.get(str(header.get("encoder")))
        if kind is None:
            raise CheckpointError(f"{file.path}: a text encoder of unknown kind {header.get('encoder')!r}")
        return kind
    shape = file.shapes.get(keys.get(TOKEN_EMBEDDING, ""))
    kind = ENCODER_KINDS.get(shape[1]) if shape is not None and len(shape) == 2 else None
    if kind is None:
        raise CheckpointError(
            f"{file.path}: not a CLIP text encoder this loader reads. Found {describe_keys(file.shapes)}. "
            "Supported: CLIP-L (width 768), OpenCLIP-H (1024) or OpenCLIP-bigG (1280) text models in Hugging "
            "Face naming (text_model.encoder.layers.N...)."
        )
    return kind


def text_encoder_kind(path: str | Path) -> str:
    """"l", "h" or "g" for a text-encoder file, from its header or shapes (no weights are read)."""
    file = SingleFile(path)
    return _text_encoder_kind(file, {hf_key(k): k for k in file.shapes}).name


def read_text_encoder_file(path: str | Path) -> TextEncoderFile:
    file = SingleFile(path)
    keys = {hf_key(k): k for k in file.shapes}
    kind = _text_encoder_kind(file, keys)
    header = file.header()
    if header is not None:
        config = dict(header["config"])
        tokenizer = tokenizer_from_spec(header["tokenizer"])
    else:
        config = _bundled_text_config(kind)
        layers = {int(k.split(".")[3]) for k in keys if k.startswith("text_model.encoder.layers.")}
        count = max(layers) + 1 if layers else config["num_hidden_layers"]
        if kind.name == "h" and count == 24:
            # SD2 conditions on OpenCLIP-H's penultimate layer through the final norm; like diffusers' converter
            # (and the checkpoint loader), leave the last layer out so last_hidden_state is that output.
            count = 23
            keys = {k: v for k, v in keys.items() if not k.startswith("text_model.encoder.layers.23.")}
        config["num_hidden_layers"] = count
        # the table sizes are the file's (the usual ones are 49408 tokens and 77 positions)
        config["vocab_size"] = file.shapes[keys[TOKEN_EMBEDDING]][0]
        positions = keys.get("text_model.embeddings.position_embedding.weight")
        if positions is not None:
            config["max_position_embeddings"] = file.shapes[positions][0]
        tokenizer = clip_tokenizer(pad_token=kind.pad_token)
    cls = CLIPTextModelWithProjection if kind.with_projection else CLIPTextModel
    text_config = CLIPTextConfig.from_dict({k: v for k, v in config.items() if k != "architectures"})
    model = _empty(lambda: cls(text_config))
    state: dict[str, torch.Tensor] = {}
    for hf, original in keys.items():
        if hf.endswith(IGNORED_SUFFIXES) or (hf.startswith("text_projection") and not kind.with_projection):
            continue  # ComfyUI's CLIP-L files hold an unused projection; transformers' CLIPTextModel has none
        state[hf if hasattr(model, "text_model") else hf.removeprefix("text_model.")] = file.tensor(original)
    model = _assemble(f"text encoder ({kind.name})", model, state, file.path, None)
    return TextEncoderFile(kind.name, model, tokenizer)


def _bundled_text_config(kind: EncoderKind) -> dict[str, Any]:
    from .families import bundled_config

    return bundled_config(*kind.config)


