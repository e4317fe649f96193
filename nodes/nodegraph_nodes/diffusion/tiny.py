"""Tiny, deterministic random-weight models shaped like the real Stable Diffusion families, for tests.

No weights can be downloaded here or in CI, so every test builds its models from configs. The configs below keep
what matters for the code under test (cross-attention, an 8x VAE, SDXL's two text encoders of different widths and
its size/aesthetic conditioning, a ControlNet that actually responds to its hint) and nothing else, so a full
sampling run takes well under a second on a CPU. The same seed always gives the same weights.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .families import bundled_config
from .tokenizer import clip_tokenizer

TINY_VOCAB_SIZE = 4096  # the first 3582 CLIP merges: common words ("photo", "red", "square") are single tokens
TIME_EMBED_DIM = 8  # SDXL's addition_time_embed_dim (256 in the real model)

TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 32, 32, 32],  # four blocks: three downsamplings, the real 8x scale factor
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

TINY_CLIP_L: dict[str, Any] = {  # CLIP ViT-L/14's text tower, shrunk (hidden 768, 12 layers in the real one)
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
}

TINY_CLIP_G: dict[str, Any] = {  # OpenCLIP ViT-bigG/14's text tower, shrunk; wider than TINY_CLIP_L on purpose
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 48,
}

TINY_CLIP_H: dict[str, Any] = {  # OpenCLIP ViT-H's text tower (SD2), shrunk
    **TINY_CLIP_G,
    "hidden_size": 40,
    "intermediate_size": 80,
    "projection_dim": 40,
}

TINY_SD1_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": TINY_CLIP_L["hidden_size"],
    "attention_head_dim": 8,
}

TINY_SD2_UNET: dict[str, Any] = {
    **TINY_SD1_UNET,
    "attention_head_dim": [2, 4],
    "use_linear_projection": True,
    "upcast_attention": True,
    "cross_attention_dim": TINY_CLIP_H["hidden_size"],
}

TINY_SDXL_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2],  # several transformer layers per block, as SDXL's (1, 2, 10)
    "attention_head_dim": [2, 4],
    "use_linear_projection": True,
    "cross_attention_dim": TINY_CLIP_L["hidden_size"] + TINY_CLIP_G["hidden_size"],
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TIME_EMBED_DIM,
    # pooled text embeds of the second encoder + 6 size/crop numbers, each embedded in TIME_EMBED_DIM
    "projection_class_embeddings_input_dim": TINY_CLIP_G["projection_dim"] + 6 * TIME_EMBED_DIM,
}

TINY_REFINER_UNET: dict[str, Any] = {
    **TINY_SDXL_UNET,
    "transformer_layers_per_block": 1,
    "attention_head_dim": [4, 8],
    "cross_attention_dim": TINY_CLIP_G["hidden_size"],  # the refiner uses the second encoder only
    # pooled embeds + 5 numbers: original size, crop, aesthetic score
    "projection_class_embeddings_input_dim": TINY_CLIP_G["projection_dim"] + 5 * TIME_EMBED_DIM,
}

TINY_CONTROLNET_HINT_CHANNELS = (8, 16, 32, 32)  # hint encoder: three stride-2 convs take pixels to latent size
CONTROLNET_INIT_STD = 0.05  # weights given to ControlNet's zero-initialised output projections
HINT_OUT_GAIN = 8.0  # brings the hint embedding to the size of the latent features it is added to


@dataclass
class Components:
    """The parts of one Stable Diffusion checkpoint, as diffusers / transformers modules.

    `family` names an entry of `families.FAMILIES` ("sd1", "sd2", "sdxl", "sdxl_refiner").
    `text_encoders` and `tokenizers` are parallel lists in the checkpoint's order: SD1/SD2 one CLIP, SDXL base
    CLIP-L then OpenCLIP bigG (with projection), refiner bigG only.
    `scheduler_config` is the diffusers scheduler config the family was trained with (for `from_config`).
    """

    family: str
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[CLIPTextModel | CLIPTextModelWithProjection]
    tokenizers: list[CLIPTokenizer]
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    # (4x3 factors, RGB bias) for live previews fitted to this checkpoint's own VAE (see preview.fit_latent_rgb);
    # None: the family's published factors
    latent_rgb: tuple[list[list[float]], list[float]] | None = None
    # the CLIP image encoder an unCLIP checkpoint carries (CLIPVisionModelWithProjection; see unclip.py), else None
    clip_vision: Any = None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Components":
        """Move every model to `device` / `dtype` (in place, like `nn.Module.to`) and return self."""
        for model in self.models():
            model.to(device=device, dtype=dtype)
        return self

    def models(self) -> list[torch.nn.Module]:
        """The torch modules, UNet first: for moving, counting parameters or saving."""
        return [self.unet, self.vae, *self.text_encoders]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU RNG seeded, restoring the caller's RNG state afterwards.

    Module constructors draw their initial weights from the global RNG; forking it keeps the weights a pure
    function of the seed without disturbing the random stream of whoever calls us.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_unet(config: dict[str, Any], seed: int) -> UNet2DConditionModel:
    with seeded(seed):
        return UNet2DConditionModel(**config).eval()


def build_vae(config: dict[str, Any], seed: int) -> AutoencoderKL:
    with seeded(seed):
        return AutoencoderKL(**config).eval()


def build_text_encoder(
    config: dict[str, Any], tokenizer: CLIPTokenizer, seed: int, with_projection: bool = False
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A random CLIP text encoder sized for `tokenizer`.

    The special-token ids come from the tokenizer because the pooled output is read at the EOS position.
    """
    text_config = CLIPTextConfig(
        **config,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with seeded(seed):
        return cls(text_config).eval()


def tiny_sd1(seed: int = 0, vocab_size: int = TINY_VOCAB_SIZE) -> Components:
    """SD1.x-shaped: UNet with cross-attention (~1 M parameters), 8x VAE, one CLIP-L-like text encoder."""
    tokenizer = clip_tokenizer(vocab_size)
    return Components(
        family="sd1",
        unet=build_unet(TINY_SD1_UNET, seed),
        vae=build_vae(TINY_VAE, seed + 1),
        text_encoders=[build_text_encoder(TINY_CLIP_L, tokenizer, seed + 2)],
        tokenizers=[tokenizer],
        scheduler_config=bundled_config("sd15", "scheduler"),
    )


def tiny_sd1_inpaint(seed: int = 0, vocab_size: int = TINY_VOCAB_SIZE) -> Components:
    """tiny_sd1 with an inpainting UNet: 9 input channels (latent, mask, masked image's latent), as SD1.5
    inpainting checkpoints; the rest is tiny_sd1's."""
    components = tiny_sd1(seed, vocab_size)
    components.unet = build_unet({**TINY_SD1_UNET, "in_channels": 9}, seed + 5)
    return components


def tiny_sd2(seed: int = 0, vocab_size: int = TINY_VOCAB_SIZE) -> Components:
    """SD2.x-768-shaped: linear-projection UNet, OpenCLIP-H-like text encoder padding with "!", v-prediction."""
    tokenizer = clip_tokenizer(vocab_size, pad_token="!")
    return Components(
        family="sd2",
        unet=build_unet(TINY_SD2_UNET, seed),
        vae=build_vae(TINY_VAE, seed + 1),
        text_encoders=[build_text_encoder(TINY_CLIP_H, tokenizer, seed + 2)],
        tokenizers=[tokenizer],
        scheduler_config=bundled_config("sd21_v", "scheduler"),
    )


def tiny_sdxl(seed: int = 0, vocab_size: int = TINY_VOCAB_SIZE) -> Components:
    """SDXL-base-shaped: text_time UNet fed by CLIP-L (hidden 32) + bigG with projection (hidden 48)."""
    tokenizer_l = clip_tokenizer(vocab_size)
    tokenizer_g = clip_tokenizer(vocab_size, pad_token="!")  # OpenCLIP pads with id 0, as SDXL's tokenizer_2
    return Components(
        family="sdxl",
        unet=build_unet(TINY_SDXL_UNET, seed),
        vae=build_vae({**TINY_VAE, "scaling_factor": 0.13025}, seed + 1),
        text_encoders=[
            build_text_encoder(TINY_CLIP_L, tokenizer_l, seed + 2),
            build_text_encoder(TINY_CLIP_G, tokenizer_g, seed + 3, with_projection=True),
        ],
        tokenizers=[tokenizer_l, tokenizer_g],
        scheduler_config=bundled_config("sdxl_base", "scheduler"),
    )


def tiny_refiner(seed: int = 0, vocab_size: int = TINY_VOCAB_SIZE) -> Components:
    """SDXL-refiner-shaped: bigG-only text conditioning and a 5-number time embedding (aesthetic score)."""
    tokenizer_g = clip_tokenizer(vocab_size, pad_token="!")
    return Components(
        family="sdxl_refiner",
        unet=build_unet(TINY_REFINER_UNET, seed),
        vae=build_vae({**TINY_VAE, "scaling_factor": 0.13025}, seed + 1),
        text_encoders=[build_text_encoder(TINY_CLIP_G, tokenizer_g, seed + 3, with_projection=True)],
        tokenizers=[tokenizer_g],
        scheduler_config=bundled_config("sdxl_refiner", "scheduler"),
    )


def tiny_controlnet(unet: UNet2DConditionModel, seed: int = 0) -> ControlNetModel:
    """A ControlNet copied from `unet` whose hint image clearly changes the output.

    `from_unet` zero-initialises the hint encoder's last conv and every output projection, as training starts, so
    an untrained ControlNet has exactly no effect. Here the hint encoder gets He-initialised convolutions (with
    default init the hint fades through its eight convolutions to ~1e-4 of the latent features) and an output
    scaled to the latent features' magnitude, and the output projections get small random weights.
    """
    with seeded(seed):
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=TINY_CONTROLNET_HINT_CHANNELS
        ).eval()
        hint = controlnet.controlnet_cond_embedding
        with torch.no_grad():
            for conv in [hint.conv_in, *hint.blocks]:
                conv.weight.normal_(0.0, math.sqrt(2.0 / conv.weight[0].numel()))
                conv.bias.zero_()
            hint.conv_out.weight.normal_(0.0, HINT_OUT_GAIN / math.sqrt(hint.conv_out.weight[0].numel()))
            hint.conv_out.bias.zero_()
            for conv in [controlnet.controlnet_mid_block, *controlnet.controlnet_down_blocks]:
                conv.weight.normal_(0.0, CONTROLNET_INIT_STD)
                conv.bias.zero_()
    return controlnet
