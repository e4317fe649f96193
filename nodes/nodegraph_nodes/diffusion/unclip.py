"""Stable Diffusion 2.1 unCLIP: a UNet conditioned on CLIP image embeddings as well as on text.

The checkpoint (ComfyUI's SD21UnclipH / SD21UnclipL, Stability's sd21-unclip-h / -l) is an SD2 single file whose
UNet has a class ("ADM") embedding: `model.diffusion_model.label_emb.0.{0,2}` takes a vector of twice the CLIP image
embedding's width (2048 for ViT-H, 1536 for ViT-L): the noise-augmented image embedding followed by a sinusoidal
embedding of the augmentation level. diffusers builds that UNet as UNet2DConditionModel with
class_embed_type="projection" and feeds the vector as `class_labels`. The file also carries the CLIP image tower,
in OpenCLIP's layout under `embedder.model.visual.`, and `noise_augmentor.*` buffers (the augmentation schedule's
tables, which ComfyUI does not read: it recomputes them, and so do we).

What a conditioning gives the UNet (ComfyUI's semantics; `adm`):
* without unCLIP entries: zeros;
* one image: the embedding noised to level round(999 * noise_augmentation) of a 1000-step squared-cosine schedule
  (`sqrt(abar) * e + sqrt(1 - abar) * n`, n drawn on the CPU from a generator seeded with the sampler's seed - 10;
  ComfyUI's embedding normaliser has mean 0 and std 1, so it is the identity), then the level's sinusoidal
  embedding (cos half first) appended, the whole vector times `strength`;
* several (unCLIPConditioning chained, or a batch of images in one CLIP_VISION_OUTPUT): the vectors are summed, and
  the summed embedding half is noised again at level round(999 * 0.05) with that level's embedding appended
  (ComfyUI's "unclip_noise_augment_merge"). ComfyUI draws this second noise from the global random generator, so it
  differs run to run; here it comes from the same seeded generator (seed - 10), so a seed gives one image.

diffusers' StableUnCLIPImg2ImgPipeline does the same for one image (`noise_image_embeddings`: its
StableUnCLIPImageNormalizer and a DDPMScheduler with squaredcos_cap_v2) and feeds zeros to the unconditional half.

SDXL models take unCLIPConditioning too (ComfyUI's "Revision"): there the noised image embedding replaces the pooled
text embedding (`pooled_for`).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from .families import UNET_PREFIX

VISION_PREFIX = "embedder.model.visual."
NOISE_AUGMENTOR_PREFIX = "noise_augmentor."
LABEL_EMB_KEY = UNET_PREFIX + "label_emb.0.0.weight"
MAX_NOISE_LEVEL = 1000
MERGE_NOISE_AUGMENTATION = 0.05  # ComfyUI's default "unclip_noise_augment_merge"
SEED_OFFSET = -10  # ComfyUI seeds the augmentation noise with the sampler's seed - 10


@dataclass(frozen=True)
class UnclipSpec:
    """One unCLIPConditioning applied to a conditioning: image embeddings [B, dim] (float32, CPU), its strength and
    noise augmentation (0..1)."""

    image_embeds: torch.Tensor
    strength: float
    noise_augmentation: float

    def cache_nbytes(self) -> int:
        return self.image_embeds.element_size() * self.image_embeds.nelement()


# --- the sampler's seed ------------------------------------------------------------------------------------------
# The augmentation noise depends on the sampler's seed (ComfyUI passes it to the model's extra conditioning). The
# denoisers are built in many places (guiders, regions), so the sampler sets it here for the run instead of
# threading it through every constructor.
_SEED: ContextVar[int] = ContextVar("unclip_sampling_seed", default=0)


@contextmanager
def sampling_seed(seed: int) -> Iterator[None]:
    token = _SEED.set(int(seed))
    try:
        yield
    finally:
        _SEED.reset(token)


# --- noise augmentation ----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def alphas_cumprod() -> torch.Tensor:
    """The augmentation schedule: 1000 squared-cosine betas (capped at 0.999), cumulative alpha products, float64."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / MAX_NOISE_LEVEL) / alpha_bar(i / MAX_NOISE_LEVEL), 0.999)
             for i in range(MAX_NOISE_LEVEL)]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float64), dim=0)


def noise_level(noise_augmentation: float) -> int:
    """unCLIPConditioning's 0..1 noise_augmentation -> a schedule step (Python's round, as ComfyUI)."""
    return round((MAX_NOISE_LEVEL - 1) * noise_augmentation)


def level_embedding(level: int, dim: int) -> torch.Tensor:
    """[1, dim] sinusoidal embedding of a noise level: cos of the frequencies first, then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = float(level) * freqs[None]
    out = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.nn.functional.pad(out, (0, dim % 2))


def augment(embed: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    """[1, dim] embedding -> [1, 2 * dim]: noised to `level`, then the level's embedding appended."""
    embed = embed.float().reshape(1, -1)
    abar = alphas_cumprod()[level]
    signal = torch.sqrt(abar).float()
    spread = torch.sqrt(1.0 - abar).float()
    noise = torch.randn(embed.shape, generator=generator, dtype=torch.float32)
    return torch.cat([signal * embed + spread * noise, level_embedding(level, embed.shape[1])], dim=1)


def adm(specs: tuple[UnclipSpec, ...], adm_channels: int, seed: int,
        merge: float = MERGE_NOISE_AUGMENTATION) -> torch.Tensor:
    """The UNet's class-embedding input [1, adm_channels] for a conditioning's unCLIP entries (see the module doc);
    `merge`: the noise augmentation of the summed embedding when there are several images."""
    if not specs:
        return torch.zeros(1, adm_channels)
    vectors = []
    for spec in specs:
        if 2 * spec.image_embeds.shape[-1] != adm_channels:
            raise ValueError(
                f"unCLIPConditioning: the CLIP vision model's image embeddings are {spec.image_embeds.shape[-1]} "
                f"wide but this unCLIP model takes {adm_channels // 2} (use the CLIP vision model of the unCLIP "
                "checkpoint, from unCLIPCheckpointLoader)"
            )
        level = noise_level(spec.noise_augmentation)
        for row in spec.image_embeds.reshape(-1, spec.image_embeds.shape[-1]):
            generator = torch.Generator().manual_seed(seed + SEED_OFFSET)  # the same draw for every image
            vectors.append(augment(row, level, generator) * spec.strength)
    if len(vectors) == 1:
        return vectors[0]
    summed = torch.stack(vectors).sum(0)
    generator = torch.Generator().manual_seed(seed + SEED_OFFSET)
    return augment(summed[:, : adm_channels // 2], noise_level(merge), generator)


def projection_channels(unet: Any) -> int | None:
    """The width of an unCLIP UNet's class-embedding input, or None for UNets without one."""
    config = getattr(unet, "config", None)
    if config is None or getattr(config, "class_embed_type", None) != "projection":
        return None
    return int(config.projection_class_embeddings_input_dim)


def class_labels(conditioning: Any, unet: Any) -> torch.Tensor | None:
    """What the denoiser passes as `class_labels` for one conditioning: None for UNets without a projection class
    embedding; else the ADM vector at the current sampling seed."""
    channels = projection_channels(unet)
    if channels is None:
        return None
    return adm(tuple(getattr(conditioning, "unclip", ())), channels, _SEED.get())


def pooled_for(conditioning: Any, pooled: torch.Tensor | None) -> torch.Tensor | None:
    """SDXL with unCLIPConditioning ("Revision", ComfyUI's sdxl_pooled): the pooled text embedding is replaced by the
    noise-augmented image embedding (the first half of the ADM vector, several images merged at noise 0), so the
    CLIP vision model must be as wide as the pooled output (CLIP ViT-bigG, 1280). Without unCLIP entries: `pooled`."""
    specs = tuple(getattr(conditioning, "unclip", ()))
    if pooled is None or not specs:
        return pooled
    width = pooled.shape[-1]
    return adm(specs, 2 * width, _SEED.get(), merge=0.0)[:, :width]


# --- the checkpoint's layout -----------------------------------------------------------------------------------


def unet_config_for(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """The UNet config of a single file: an SD2 config gains the projection class embedding when the file's UNet
    has `label_emb` (an unCLIP checkpoint), as wide as the file's."""
    config = dict(config)
    if LABEL_EMB_KEY in shapes and config.get("addition_embed_type") is None:
        config.update(class_embed_type="projection", projection_class_embeddings_input_dim=shapes[LABEL_EMB_KEY][1])
    return config


def has_clip_vision(shapes: Mapping[str, Any]) -> bool:
    return any(k.startswith(VISION_PREFIX) for k in shapes)


_TOP = {  # OpenCLIP visual tower names -> transformers' CLIPVisionModelWithProjection names
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_LAYER_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)[._](weight|bias)$")


def open_clip_visual_to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP visual tower weights (keys without prefix) -> CLIPVisionModelWithProjection weights.

    OpenCLIP fuses q, k, v into `attn.in_proj_*` (stacked in that order) and applies `proj` as `x @ P`, the
    transpose of transformers' `visual_projection.weight`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _TOP:
            out[_TOP[key]] = value
        elif key == "proj":
            out["visual_projection.weight"] = value.T.contiguous()
        elif m := _LAYER_KEY.match(key):
            layer, module, kind = m.groups()
            base = f"vision_model.encoder.layers.{layer}."
            if module == "attn.in_proj":
                for name, part in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{base}self_attn.{name}_proj.{kind}"] = part.contiguous()
            elif module in _LAYER:
                out[f"{base}{_LAYER[module]}.{kind}"] = value
            else:
                raise KeyError(f"unknown OpenCLIP visual tower weight {key!r}")
        else:
            raise KeyError(f"unknown OpenCLIP visual tower weight {key!r}")
    return out


def transformers_to_open_clip_visual(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of open_clip_visual_to_transformers (for writing test checkpoints)."""
    top = {v: k for k, v in _TOP.items()}
    layer_names = {v: k for k, v in _LAYER.items()}
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key in top:
            out[top[key]] = value
        elif key == "visual_projection.weight":
            out["proj"] = value.T.contiguous()
        elif m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key):
            layer, module, kind = m.groups()
            if q := re.fullmatch(r"self_attn\.([qkv])_proj", module):
                fused.setdefault(f"transformer.resblocks.{layer}.attn.in_proj_{kind}", {})[q[1]] = value
            else:
                out[f"transformer.resblocks.{layer}.{layer_names[module]}.{kind}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for CLIP vision weight {key!r}")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def noise_augmentor_buffers() -> dict[str, torch.Tensor]:
    """The `noise_augmentor.*` tables Stability's unCLIP checkpoints carry (float32), for test files of that layout."""
    abar = alphas_cumprod()
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    betas = 1.0 - abar / prev
    tables = {
        "betas": betas, "alphas_cumprod": abar, "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": abar.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - abar).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - abar).log(), "sqrt_recip_alphas_cumprod": (1 / abar).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / abar - 1).sqrt(),
    }
    return {NOISE_AUGMENTOR_PREFIX + k: v.float() for k, v in tables.items()}


CLIP_VISION_CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "image_size", "patch_size", "projection_dim", "hidden_act", "layer_norm_eps")


def unclip_file_extras(clip_vision: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What an unCLIP single file holds besides an SD2 checkpoint's weights: the image encoder under
    `embedder.model.visual.` (OpenCLIP names) and the `noise_augmentor.*` tables; plus the encoder's config for our
    header (tiny test models are not a released architecture)."""
    state = {VISION_PREFIX + k: v for k, v in transformers_to_open_clip_visual(clip_vision.state_dict()).items()}
    state.update(noise_augmentor_buffers())
    return state, {k: getattr(clip_vision.config, k) for k in CLIP_VISION_CONFIG_KEYS}

