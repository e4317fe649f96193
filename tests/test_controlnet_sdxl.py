"""An SDXL ControlNet through ksample against diffusers' StableDiffusionXLControlNetPipeline (tiny models in memory).

The ControlNet of an SDXL model takes the same added conditioning as the UNet (pooled text embeds and size time
ids); the denoiser passes it along. Euler with the "normal" scheduler at 10 steps walks integer timesteps (999, 888,
..., 0), diffusers' "linspace" spacing; ours starts from exactly the pipeline's starting tensor (see
test_ksampler_parity.py for why Euler needs that).
"""
from __future__ import annotations

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline

from nodegraph_nodes.diffusion.conditioning import Conditioning, ControlSpec
from nodegraph_nodes.diffusion.sampling_run import ksample, ksampler_sigmas, prepare_noise
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from nodegraph_nodes.diffusion.text_encoding import TEXT_FAMILIES, ClipTextEncoder
from nodegraph_nodes.diffusion.tiny import tiny_controlnet, tiny_sdxl

SEED, STEPS, CFG, SIZE = 7, 10, 5.0, 64


@pytest.fixture(scope="module")
def sdxl():
    components = tiny_sdxl(0)
    encoder = ClipTextEncoder(TEXT_FAMILIES["sdxl"], dict(zip("lg", components.text_encoders)),
                              dict(zip("lg", components.tokenizers)))
    return components, tiny_controlnet(components.unet, 1), encoder.encode("a red square"), encoder.encode("blurry")


def test_sdxl_controlnet_matches_diffusers_pipeline(sdxl):
    components, controlnet, positive, negative = sdxl
    hint = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(3))
    spec = ControlSpec(controlnet, hint, strength=0.7)
    pipe = StableDiffusionXLControlNetPipeline(
        vae=components.vae, text_encoder=components.text_encoders[0], text_encoder_2=components.text_encoders[1],
        tokenizer=components.tokenizers[0], tokenizer_2=components.tokenizers[1], unet=components.unet,
        controlnet=controlnet,
        scheduler=EulerDiscreteScheduler.from_config(components.scheduler_config, timestep_spacing="linspace"),
    )
    pipe.set_progress_bar_config(disable=True)
    sampling = DiscreteModelSampling.from_config(components.scheduler_config)
    sigmas = ksampler_sigmas(sampling, "normal", "euler", STEPS)
    pipe.scheduler.set_timesteps(STEPS)
    assert pipe.scheduler.timesteps.tolist() == sampling.timestep(sigmas[:-1]).tolist()

    zeros = torch.zeros(1, 4, SIZE // 8, SIZE // 8)
    start = sampling.noise_scaling(float(sigmas[0]), prepare_noise(zeros, SEED), zeros)
    latents = start / pipe.scheduler.init_noise_sigma
    theirs = pipe(
        prompt_embeds=positive.embeds, pooled_prompt_embeds=positive.pooled, negative_prompt_embeds=negative.embeds,
        negative_pooled_prompt_embeds=negative.pooled, image=hint.movedim(-1, 1), controlnet_conditioning_scale=0.7,
        num_inference_steps=STEPS, guidance_scale=CFG, output_type="latent", height=SIZE, width=SIZE, latents=latents,
    ).images
    common = dict(seed=SEED, steps=STEPS, cfg=CFG, sampler_name="euler", scheduler="normal", add_noise=False)
    start = latents * pipe.scheduler.init_noise_sigma  # the pipeline's own start, rounded like its product
    ours = ksample(components.unet, sampling, positive.with_control(spec), negative.with_control(spec), start,
                   **common)
    plain = ksample(components.unet, sampling, positive, negative, start, **common)
    assert (ours - theirs).abs().max() <= 1e-4
    assert (ours - plain).abs().max() > 1e-2


def test_sdxl_controlnet_gets_the_size_conditioning(sdxl):
    """The ControlNet sees the conditioning's time ids: other sizes change its residuals, hence the result."""
    components, controlnet, positive, negative = sdxl
    hint = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(3))
    spec = ControlSpec(controlnet, hint)
    sampling = DiscreteModelSampling.from_config(components.scheduler_config)
    calls = []
    hook = controlnet.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["added_cond_kwargs"]["time_ids"].tolist()), with_kwargs=True
    )
    try:
        big = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]])
        sized = Conditioning(positive.embeds, positive.pooled, big)
        ksample(components.unet, sampling, sized.with_control(spec), negative.with_control(spec),
                torch.zeros(1, 4, 8, 8), seed=1, steps=2, cfg=CFG, sampler_name="euler", scheduler="normal")
    finally:
        hook.remove()
    # one batched call per step: [uncond (defaults at the latent size), cond (the given size)]
    assert calls == [[[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], big[0].tolist()]] * 2
