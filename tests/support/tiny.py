"""Tiny, seeded CLIP text encoders and tokenizers (and the pipelines around them) for text-encoding tests.

The tokenizer is a real transformers `CLIPTokenizer` over a byte-level vocabulary: the 256 byte characters, the
same with the end-of-word mark, then the two special tokens (514 ids, no merges). It tokenizes every word letter by
letter, so tests can count tokens exactly: each letter of a word is one token.
"""
from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
LAYERS = 3
# Different widths, as the real 768 / 1280: with equal ones diffusers' single-file loader reads text_encoder_2 from
# the wrong keys.
L_HIDDEN, G_HIDDEN, G_PROJECTION = 32, 48, 40


def byte_characters() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for bytes, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def byte_vocabulary() -> dict[str, int]:
    chars = byte_characters()
    return {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars] + [BOS, EOS])}


def tiny_tokenizer(pad_token: str) -> CLIPTokenizer:
    """CLIP-L's tokenizer pads with EOS, OpenCLIP bigG's with "!" (id 0), as in the released SDXL tokenizers."""
    return CLIPTokenizer(
        vocab=byte_vocabulary(), merges=[], unk_token=EOS, bos_token=BOS, eos_token=EOS, pad_token=pad_token,
        model_max_length=77,
    )


def _config(tokenizer: CLIPTokenizer, hidden: int, **extra) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=LAYERS,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra,
    )


def tiny_clip_l(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(_config(tokenizer, L_HIDDEN)).eval()


def tiny_clip_g(tokenizer: CLIPTokenizer, seed: int = 1) -> CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(_config(tokenizer, G_HIDDEN, projection_dim=G_PROJECTION)).eval()


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        latent_channels=4, norm_num_groups=8, layers_per_block=1,
    )


def _scheduler() -> EulerDiscreteScheduler:
    """The SD / SDXL training schedule (scaled-linear betas 0.00085 -> 0.012)."""
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


def _unet(cross_attention_dim: int, **extra) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, **extra,
    )


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
