"""Tiny seeded models for the tests, all built with nodegraph_nodes.diffusion.tiny (one factory, one seeding rule).

- `tiny_unet`, `tiny_sd1_pipeline`: SD1-shaped parts (tiny.py's TINY_SD1_UNET, TINY_VAE, TINY_CLIP_L) around a
  byte-level tokenizer, as a diffusers StableDiffusionPipeline: the reference side of the sampler parity tests.
- `tiny_tokenizer`, `tiny_clip_l`, `tiny_clip_g`, `sd1_pipeline`, `sdxl_pipeline`, `refiner_pipeline`: 3-layer text
  encoders and the pipelines around them, for the text-encoding tests.

The tokenizer is a real transformers `CLIPTokenizer` over CLIP's byte-level vocabulary without merges
(diffusion/tokenizer.py with BYTE_VOCAB_SIZE ids: the 256 byte characters, the same with the end-of-word mark, then
the two special tokens). It tokenizes every word letter by letter, so tests can count tokens exactly.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import (  # noqa: E402
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

from nodegraph_nodes.diffusion.tiny import (  # noqa: E402
    TINY_CLIP_G,
    TINY_CLIP_L,
    TINY_SD1_UNET,
    TINY_VAE,
    build_text_encoder,
    build_unet,
    build_vae,
)
from nodegraph_nodes.diffusion.tokenizer import BYTE_VOCAB_SIZE, clip_tokenizer  # noqa: E402
from nodegraph_nodes.diffusion.tokenizer import EOS_TOKEN as EOS  # noqa: E402

SD1_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
}


def tiny_tokenizer(pad_token: str = EOS) -> CLIPTokenizer:
    """The byte-level CLIP tokenizer. CLIP-L's pads with EOS, OpenCLIP bigG's with "!" (id 0), as in the released
    SDXL tokenizers."""
    return clip_tokenizer(BYTE_VOCAB_SIZE, pad_token=pad_token)


# --- SD1 parts and pipeline for the sampler tests -------------------------------------------------------------


def tiny_unet(seed: int = 0, **overrides) -> UNet2DConditionModel:
    """tiny.py's SD1 UNet (~1 M parameters), with config `overrides`."""
    return build_unet({**TINY_SD1_UNET, **overrides}, seed)


def tiny_sd1_pipeline(scheduler=None, seed: int = 0) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline of tiny seeded parts (no safety checker). `scheduler` defaults to Euler."""
    tokenizer = tiny_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=build_vae(TINY_VAE, seed + 2), text_encoder=build_text_encoder(TINY_CLIP_L, tokenizer, seed + 1),
        tokenizer=tokenizer, unet=tiny_unet(seed),
        scheduler=scheduler or EulerDiscreteScheduler(**SD1_SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encoded_sd1(prompt: str = "a photo of a cat", negative: str = "blurry", seed: int = 0):
    """tiny_sd1_pipeline(seed=seed) with `prompt` and `negative` encoded by diffusers' own encode_prompt, as our
    Conditioning, and the epsilon model sampling of the pipeline's schedule: (pipe, positive, negative, sampling)."""
    from nodegraph_nodes.diffusion.conditioning import Conditioning
    from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling

    pipe = tiny_sd1_pipeline(seed=seed)
    positive, negative_embeds = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    sampling = DiscreteModelSampling(pipe.scheduler.alphas_cumprod, "epsilon")
    return pipe, Conditioning(positive), Conditioning(negative_embeds), sampling


# --- 3-layer text encoders and the pipelines around them, for the text-encoding tests ---------------------------

LAYERS = 3
# Different widths, as the real 768 / 1280: with equal ones diffusers' single-file loader reads text_encoder_2 from
# the wrong keys.
L_HIDDEN, G_HIDDEN, G_PROJECTION = 32, 48, 40
_TEXT_CLIP_L = {**TINY_CLIP_L, "num_hidden_layers": LAYERS}
_TEXT_CLIP_G = {**TINY_CLIP_G, "num_hidden_layers": LAYERS, "hidden_act": "quick_gelu", "projection_dim": G_PROJECTION}
_TEXT_VAE = dict(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                 up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=8, layers_per_block=1)
_TEXT_UNET = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
assert _TEXT_CLIP_L["hidden_size"] == L_HIDDEN and _TEXT_CLIP_G["hidden_size"] == G_HIDDEN


def tiny_clip_l(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPTextModel:
    return build_text_encoder(_TEXT_CLIP_L, tokenizer, seed)


def tiny_clip_g(tokenizer: CLIPTokenizer, seed: int = 1) -> CLIPTextModelWithProjection:
    return build_text_encoder(_TEXT_CLIP_G, tokenizer, seed, with_projection=True)


def _vae() -> AutoencoderKL:
    return build_vae(_TEXT_VAE, 0)


def _scheduler() -> EulerDiscreteScheduler:
    """The SD / SDXL training schedule (scaled-linear betas 0.00085 -> 0.012)."""
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


def _unet(cross_attention_dim: int, **extra) -> UNet2DConditionModel:
    return build_unet({**_TEXT_UNET, "cross_attention_dim": cross_attention_dim, **extra}, 0)


def sd1_pipeline(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=_unet(L_HIDDEN),
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def sdxl_pipeline(
    clip_l: CLIPTextModel, tokenizer_l: CLIPTokenizer, clip_g: CLIPTextModelWithProjection, tokenizer_g: CLIPTokenizer
) -> StableDiffusionXLPipeline:
    unet = _unet(
        L_HIDDEN + G_HIDDEN, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=G_PROJECTION + 6 * 8,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=clip_l, text_encoder_2=clip_g, tokenizer=tokenizer_l, tokenizer_2=tokenizer_g,
        unet=unet, scheduler=_scheduler(), add_watermarker=False,
    )


def refiner_pipeline(
    clip_g: CLIPTextModelWithProjection, tokenizer_g: CLIPTokenizer
) -> StableDiffusionXLImg2ImgPipeline:
    unet = _unet(
        G_HIDDEN, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=G_PROJECTION + 5 * 8,
    )
    return StableDiffusionXLImg2ImgPipeline(
        vae=_vae(), text_encoder=None, text_encoder_2=clip_g, tokenizer=None, tokenizer_2=tokenizer_g, unet=unet,
        scheduler=_scheduler(), requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
