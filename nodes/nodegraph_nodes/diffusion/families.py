"""Model families as data: how to recognise each in a checkpoint, and the settings that come with it.

A single-file checkpoint (the original "LDM" key layout that ComfyUI and A1111 use) carries weights but no config.
Each family below says which keys and tensor shapes identify it and which bundled diffusers-format config folder
(`configs/<folder>/`) describes its real architecture, plus what the sampler and text encoder need to know
(prediction type, latent scale, default resolution, which hidden layer of which text encoder is used).
Adding a family is adding an entry here and a config folder, not another branch in the loader.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CONTROLNET_PREFIX = "control_model."

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class KeyRule:
    """One fact about a checkpoint: `key` is present, optionally with `size` along axis `dim`.

    `min_std` makes it a fact about the values (population std of the tensor above it); it is only checked when the
    tensors are at hand, and fails otherwise.
    """

    key: str
    dim: int | None = None
    size: int | tuple[int, ...] | None = None  # a tuple: any of these sizes
    min_std: float | None = None

    def holds(self, shapes: Mapping[str, tuple[int, ...]], tensor: Callable[[str], torch.Tensor] | None) -> bool:
        shape = shapes.get(self.key)
        if shape is None:
            return False
        sizes = self.size if isinstance(self.size, tuple) else (self.size,)
        if self.dim is not None and (len(shape) <= self.dim or shape[self.dim] not in sizes):
            return False
        if self.min_std is not None:
            if tensor is None:
                return False
            return float(tensor(self.key).float().std(unbiased=False)) > self.min_std
        return True


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder of a family.

    subfolder: its diffusers folder ("text_encoder" or "text_encoder_2"), also the key of its bundled config.
    prefix: where its weights live in the original single-file layout.
    layout: "clip" (Hugging Face CLIP keys under `prefix`) or "open_clip" (OpenCLIP keys, fused q/k/v projections).
    with_projection: built as CLIPTextModelWithProjection; its `text_embeds` are SDXL's pooled conditioning.
    hidden_layer: which hidden states condition the UNet: -1 = `last_hidden_state` (final LayerNorm applied),
        -2 = `hidden_states[-2]` (penultimate layer, no final LayerNorm), as SDXL uses for both encoders.
    pad_token: the padding token of the family's tokenizer (OpenCLIP-based tokenizers pad with "!", id 0).
    """

    subfolder: str
    prefix: str
    layout: str
    with_projection: bool = False
    hidden_layer: int = -1
    pad_token: str = EOS


@dataclass(frozen=True)
class Family:
    """A Stable Diffusion checkpoint family.

    signatures: alternative sets of KeyRules; the family matches when every rule of one set holds.
    config_folder: the bundled diffusers-format folder (under configs/) with the real architecture.
    config_overrides: per-component config values that differ from the folder (component -> {key: value}).
    folder_signature: how a diffusers folder of this family is recognised: "<component>.<config key>" -> value
        (a tuple: any of these values), with "model_index" for model_index.json.
    time_ids: 0 (none), 6 (SDXL: original size, crop, target size) or 5 (refiner: ..., aesthetic score).
    """

    name: str
    description: str
    config_folder: str
    text_encoders: tuple[TextEncoderSpec, ...]
    prediction_type: str
    latent_scale: float
    default_resolution: int
    signatures: tuple[tuple[KeyRule, ...], ...]
    folder_signature: Mapping[str, Any]
    time_ids: int = 0
    config_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def config(self, component: str) -> dict[str, Any]:
        """The diffusers config of `component` ("unet", "vae", "scheduler", "text_encoder", "text_encoder_2")."""
        return {**bundled_config(self.config_folder, component), **self.config_overrides.get(component, {})}

    def matches(
        self, shapes: Mapping[str, tuple[int, ...]], tensor: Callable[[str], torch.Tensor] | None = None
    ) -> bool:
        return any(all(rule.holds(shapes, tensor) for rule in rules) for rules in self.signatures)


@dataclass(frozen=True)
class ControlNetFamily:
    """A ControlNet family: recognised on keys with any `control_model.` prefix removed.

    signatures cover both the original layout (input_hint_block, zero_convs) and diffusers-key files
    (controlnet_cond_embedding ...), which are common for ControlNets saved as one .safetensors file.
    """

    name: str
    description: str
    config_folder: str
    base_families: tuple[str, ...]
    signatures: tuple[tuple[KeyRule, ...], ...]

    def config(self) -> dict[str, Any]:
        return bundled_config(self.config_folder, "")

    def matches(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        return any(all(rule.holds(shapes, None) for rule in rules) for rules in self.signatures)


def bundled_json(*parts: str) -> dict[str, Any]:
    """A JSON file of the bundled config folders, by its path under configs/."""
    return json.loads(resources.files(__package__).joinpath("configs", *parts).read_text(encoding="utf-8"))


def bundled_config(folder: str, component: str) -> dict[str, Any]:
    """The JSON config of one component ("unet", "vae", "scheduler", ...; "" for a lone model) of a bundled folder."""
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return bundled_json(folder, *([component] if component else []), name)


# --- the facts the signatures test ------------------------------------------------------------------------------
# The first cross-attention of the first UNet block: its to_k input width is the text context dimension.
_SD_ATTN2_K = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_UNET_IN = UNET_PREFIX + "input_blocks.0.0.weight"  # in_channels on axis 1: 4 for text-to-image (9 for inpainting)
UNET_IN_KEY = _UNET_IN
# The UNet's input channels in SD1 / SDXL files: 4 (the latent) for text-to-image models, 9 for inpainting models
# (latent + mask + the masked image's latent). The loader builds the UNet with the file's count.
SD_UNET_IN_CHANNELS = (4, 9)
# SDXL-style size conditioning: label_emb's input width = pooled dim + number of time ids * 256
_LABEL_EMB = UNET_PREFIX + "label_emb.0.0.weight"
# Keys cannot tell SD2's v-prediction (768) models from its epsilon (512 "base") ones. A heuristic, the one ComfyUI
# uses: this norm bias has a population std above 0.09 in the v-prediction releases and below it in the base ones.
_SD2_V_PROBE = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"

CLIP_L_SD1 = TextEncoderSpec("text_encoder", "cond_stage_model.transformer.", "clip")
CLIP_H_SD2 = TextEncoderSpec("text_encoder", "cond_stage_model.model.", "open_clip", pad_token="!")
CLIP_L_SDXL = TextEncoderSpec("text_encoder", "conditioner.embedders.0.transformer.", "clip", hidden_layer=-2)
CLIP_G_SDXL = TextEncoderSpec(
    "text_encoder_2", "conditioner.embedders.1.model.", "open_clip", with_projection=True, hidden_layer=-2,
    pad_token="!",
)
CLIP_G_REFINER = TextEncoderSpec(
    "text_encoder_2", "conditioner.embedders.0.model.", "open_clip", with_projection=True, hidden_layer=-2,
    pad_token="!",
)

_SD2_COMMON = (
    KeyRule(_SD_ATTN2_K, dim=1, size=1024),
    KeyRule(_UNET_IN, dim=1, size=4),
    KeyRule("cond_stage_model.model.token_embedding.weight"),
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="sd1",
            description="Stable Diffusion 1.x (CLIP ViT-L, 512 px, epsilon)",
            config_folder="sd15",
            text_encoders=(CLIP_L_SD1,),
            prediction_type="epsilon",
            latent_scale=0.18215,
            default_resolution=512,
            signatures=tuple(
                (
                    KeyRule(_SD_ATTN2_K, dim=1, size=768),
                    KeyRule(_UNET_IN, dim=1, size=SD_UNET_IN_CHANNELS),
                    KeyRule(f"cond_stage_model.transformer.{inner}embeddings.token_embedding.weight"),
                )
                # older SD1 files store the CLIP text model without transformers' "text_model." level
                for inner in ("text_model.", "")
            ),
            folder_signature={
                "model_index._class_name": ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline"),
                "unet.cross_attention_dim": 768,
            },
        ),
        Family(
            name="sd2",
            description="Stable Diffusion 2.x 768 (OpenCLIP ViT-H, 768 px, v-prediction)",
            config_folder="sd21_v",
            text_encoders=(CLIP_H_SD2,),
            prediction_type="v_prediction",
            latent_scale=0.18215,
            default_resolution=768,
            signatures=(_SD2_COMMON + (KeyRule(_SD2_V_PROBE, min_std=0.09),),),
            folder_signature={
                "model_index._class_name": "StableDiffusionPipeline",
                "unet.cross_attention_dim": 1024,
                "scheduler.prediction_type": "v_prediction",
            },
        ),
        Family(
            name="sd2_base",
            description="Stable Diffusion 2.x base (OpenCLIP ViT-H, 512 px, epsilon)",
            config_folder="sd21_v",
            text_encoders=(CLIP_H_SD2,),
            prediction_type="epsilon",
            latent_scale=0.18215,
            default_resolution=512,
            signatures=(_SD2_COMMON,),  # checked after "sd2": an SD2 UNet without v-prediction's signature
            folder_signature={
                "model_index._class_name": "StableDiffusionPipeline",
                "unet.cross_attention_dim": 1024,
                "scheduler.prediction_type": "epsilon",
            },
            config_overrides={
                "unet": {"sample_size": 64},
                "vae": {"sample_size": 512},
                "scheduler": {"prediction_type": "epsilon"},
            },
        ),
        Family(
            name="sdxl",
            description="Stable Diffusion XL base (CLIP ViT-L + OpenCLIP ViT-bigG, 1024 px, epsilon)",
            config_folder="sdxl_base",
            text_encoders=(CLIP_L_SDXL, CLIP_G_SDXL),
            prediction_type="epsilon",
            latent_scale=0.13025,
            default_resolution=1024,
            time_ids=6,
            signatures=(
                (
                    KeyRule(_LABEL_EMB, dim=1, size=1280 + 6 * 256),
                    KeyRule(_UNET_IN, dim=1, size=SD_UNET_IN_CHANNELS),
                    KeyRule("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"),
                    KeyRule("conditioner.embedders.1.model.token_embedding.weight"),
                ),
            ),
            folder_signature={
                "model_index._class_name": ("StableDiffusionXLPipeline", "StableDiffusionXLInpaintPipeline"),
            },
        ),
        Family(
            name="sdxl_refiner",
            description="Stable Diffusion XL refiner (OpenCLIP ViT-bigG, aesthetic score, 1024 px, epsilon)",
            config_folder="sdxl_refiner",
            text_encoders=(CLIP_G_REFINER,),
            prediction_type="epsilon",
            latent_scale=0.13025,
            default_resolution=1024,
            time_ids=5,
            signatures=(
                (
                    KeyRule(_LABEL_EMB, dim=1, size=1280 + 5 * 256),
                    KeyRule(_UNET_IN, dim=1, size=4),
                    KeyRule("conditioner.embedders.0.model.token_embedding.weight"),
                ),
            ),
            folder_signature={"model_index._class_name": "StableDiffusionXLImg2ImgPipeline"},
        ),
    )
}

CONTROLNET_FAMILIES: dict[str, ControlNetFamily] = {
    f.name: f
    for f in (
        ControlNetFamily(
            name="controlnet_sd1",
            description="ControlNet for Stable Diffusion 1.x",
            config_folder="controlnet_sd15",
            base_families=("sd1",),
            signatures=(
                (
                    KeyRule("input_hint_block.0.weight"),
                    KeyRule("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", dim=1, size=768),
                ),
                (
                    KeyRule("controlnet_cond_embedding.conv_in.weight"),
                    KeyRule("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", dim=1, size=768),
                ),
            ),
        ),
        ControlNetFamily(
            name="controlnet_sdxl",
            description="ControlNet for Stable Diffusion XL base",
            config_folder="controlnet_sdxl",
            base_families=("sdxl",),
            signatures=(
                (
                    KeyRule("input_hint_block.0.weight"),
                    KeyRule("label_emb.0.0.weight", dim=1, size=2816),
                    KeyRule("input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight", dim=1, size=2048),
                ),
                (
                    KeyRule("controlnet_cond_embedding.conv_in.weight"),
                    KeyRule("add_embedding.linear_1.weight", dim=1, size=2816),
                    KeyRule("down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight", dim=1, size=2048),
                ),
            ),
        ),
    )
}


def detect_family(
    shapes: Mapping[str, tuple[int, ...]], tensor: Callable[[str], torch.Tensor] | None = None
) -> Family | None:
    """The first family whose signature holds for a single-file checkpoint's key -> shape map, or None.

    `tensor(key)` gives a tensor's values for the few rules that look at values (SD2 v-prediction vs epsilon).
    """
    return next((f for f in FAMILIES.values() if f.matches(shapes, tensor)), None)


def detect_controlnet_family(shapes: Mapping[str, tuple[int, ...]]) -> ControlNetFamily | None:
    """The ControlNet family of a key -> shape map (keys with or without the `control_model.` prefix), or None."""
    plain = {k.removeprefix(CONTROLNET_PREFIX): s for k, s in shapes.items()}
    return next((f for f in CONTROLNET_FAMILIES.values() if f.matches(plain)), None)


def detect_folder_family(configs: Mapping[str, Mapping[str, Any]]) -> Family | None:
    """The family of a diffusers folder from its configs ({"model_index": {...}, "unet": {...}, ...}), or None."""

    def value(path: str) -> Any:
        component, key = path.split(".", 1)
        return configs.get(component, {}).get(key)

    def fits(path: str, expected: Any) -> bool:
        return value(path) in expected if isinstance(expected, tuple) else value(path) == expected

    return next((f for f in FAMILIES.values() if all(fits(p, v) for p, v in f.folder_signature.items())), None)


def describe_keys(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """A short summary of what a checkpoint holds, for error messages: key groups and the shapes rules look at."""
    groups: dict[str, int] = {}
    for key in shapes:
        parts = key.split(".")
        depth = 3 if parts[0] in ("conditioner", "cond_stage_model") else 2
        group = ".".join(parts[:depth])
        groups[group] = groups.get(group, 0) + 1
    listed = ", ".join(f"{g}.* ({n} tensors)" for g, n in sorted(groups.items())[:12])
    if len(groups) > 12:
        listed += f", ... ({len(groups) - 12} more groups)"
    probes = [
        f"{k.removeprefix(UNET_PREFIX)} {list(shapes[k])}" for k in (_SD_ATTN2_K, _UNET_IN, _LABEL_EMB) if k in shapes
    ]
    return f"{len(shapes)} tensors: {listed}" + (f"; {'; '.join(probes)}" if probes else "")
