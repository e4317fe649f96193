"""The tiny model builders: deterministic, shaped like the real families, and a ControlNet that has an effect."""
from __future__ import annotations

import pytest
import torch

from nodegraph_nodes.diffusion.families import FAMILIES
from nodegraph_nodes.diffusion.tiny import tiny_controlnet, tiny_refiner, tiny_sd1, tiny_sd2, tiny_sdxl
from support.models import assert_same_weights


@pytest.fixture(scope="module")
def sd1():
    return tiny_sd1(seed=0)


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl(seed=0)


def encode(components, index, prompt="a photo of a cat"):
    tokenizer = components.tokenizers[index]
    ids = tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    return components.text_encoders[index](ids, output_hidden_states=True)


def test_same_seed_same_weights_and_callers_rng_untouched(sd1):
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    again = tiny_sd1(seed=0)
    assert torch.equal(torch.rand(3), expected_draw)
    for a, b in zip(again.models(), sd1.models(), strict=True):
        assert_same_weights(a, b)
    other = tiny_sd1(seed=1)
    assert not torch.equal(other.unet.conv_in.weight, sd1.unet.conv_in.weight)


def test_sd1_shapes(sd1):
    assert sd1.family == "sd1" and len(sd1.text_encoders) == 1
    assert 0.9e6 < sum(p.numel() for p in sd1.unet.parameters()) < 1.3e6
    assert sd1.vae.config.scaling_factor == FAMILIES["sd1"].latent_scale
    with torch.no_grad():
        latents = sd1.vae.encode(torch.rand(1, 3, 64, 64)).latent_dist.mean
        context = encode(sd1, 0).last_hidden_state
        out = sd1.unet(latents, 999, context).sample
    assert latents.shape == (1, 4, 8, 8)  # 8x downsampling like the real VAE
    assert out.shape == latents.shape
    assert sd1.text_encoders[0].config.eos_token_id == sd1.tokenizers[0].eos_token_id


def test_sdxl_and_refiner_conditioning_shapes(sdxl):
    refiner = tiny_refiner(seed=0)
    hidden = [encoder.config.hidden_size for encoder in sdxl.text_encoders]
    assert hidden[0] != hidden[1]  # as 768 vs 1280: diffusers tells the encoders apart by width
    with torch.no_grad():
        first, second = encode(sdxl, 0), encode(sdxl, 1)
        context = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        added = {"text_embeds": second.text_embeds, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
        assert sdxl.unet(torch.randn(1, 4, 8, 8), 10, context, added_cond_kwargs=added).sample.shape == (1, 4, 8, 8)
        g = encode(refiner, 0)
        added = {"text_embeds": g.text_embeds, "time_ids": torch.tensor([[64.0, 64, 0, 0, 6.0]])}
        out = refiner.unet(torch.randn(1, 4, 8, 8), 10, g.hidden_states[-2], added_cond_kwargs=added).sample
    assert out.shape == (1, 4, 8, 8)
    assert [t.pad_token_id for t in sdxl.tokenizers] == [sdxl.tokenizers[0].eos_token_id, 0]
    assert sdxl.vae.config.scaling_factor == 0.13025


def test_sd2_is_v_prediction():
    sd2 = tiny_sd2(seed=0)
    assert sd2.scheduler_config["prediction_type"] == "v_prediction"
    assert sd2.unet.config.cross_attention_dim == sd2.text_encoders[0].config.hidden_size


def test_controlnet_hint_changes_the_output_and_scale_zero_does_not(sd1):
    controlnet = tiny_controlnet(sd1.unet, seed=0)
    assert_same_weights(controlnet, tiny_controlnet(sd1.unet, seed=0))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    with torch.no_grad():
        context = encode(sd1, 0).last_hidden_state
        plain = sd1.unet(latents, 500, context).sample

        def controlled(hint, scale):
            down, mid = controlnet(latents, 500, context, controlnet_cond=hint, conditioning_scale=scale,
                                   return_dict=False)
            return sd1.unet(latents, 500, context, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample

        black, white = torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)
        assert torch.equal(controlled(white, 0.0), plain)
        scale = plain.abs().mean()
        assert (controlled(white, 1.0) - plain).abs().mean() > 0.1 * scale
        # the hint itself matters, not only the ControlNet's extra residuals
        assert (controlled(white, 1.0) - controlled(black, 1.0)).abs().mean() > 0.1 * scale
