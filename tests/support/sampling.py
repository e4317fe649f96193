"""Tiny seeded SD1-shaped models for the sampler tests, built in memory, no weights.

`tiny_sd1_pipeline()` gives a StableDiffusionPipeline around a ~1 M parameter UNet, a 4-block VAE (scale factor 8
like the real one) and a 2-layer CLIP text encoder with a byte-level tokenizer. `gaussian_denoiser()` is a toy
denoiser with a closed-form answer, for testing samplers without any network.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

SD1_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
}


def _byte_vocab() -> dict[str, int]:
    """CLIP's byte-level vocabulary without merges: the 256 byte symbols, the same with the word-end marker, then
    the start/end tokens (514 ids)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    chars = [symbols[b] for b in range(256)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def tiny_unet(seed: int = 0, **overrides):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    config = dict(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
    )
    config.update(overrides)
    return UNet2DConditionModel(**config).eval()


def tiny_sd1_pipeline(scheduler=None, seed: int = 0):
    """A StableDiffusionPipeline of tiny seeded parts (no safety checker). `scheduler` defaults to Euler."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = _byte_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                              model_max_length=77)
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
        )
    ).eval()
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    ).eval()
    scheduler = scheduler or EulerDiscreteScheduler(**SD1_SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_unet(seed), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gaussian_denoiser(mean: float = 0.3, std: float = 0.5):
    """The exact denoiser for data x0 ~ N(mean, std^2) per element: E[x0 | x0 + sigma*n = x].

    The probability-flow ODE then has the closed-form solution
    x(sigma) = mean + (x(sigma0) - mean) * sqrt((std^2 + sigma^2) / (std^2 + sigma0^2)) (see `gaussian_ode`).
    """
    var = std**2

    def denoise(x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        s2 = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) ** 2
        return (x * var + mean * s2) / (var + s2)

    return denoise


def gaussian_ode(x0: torch.Tensor, sigma0: float, sigma: float, mean: float = 0.3, std: float = 0.5) -> torch.Tensor:
    """The exact probability-flow ODE solution for `gaussian_denoiser` from sigma0 to sigma."""
    return mean + (x0 - mean) * ((std**2 + sigma**2) / (std**2 + sigma0**2)) ** 0.5
