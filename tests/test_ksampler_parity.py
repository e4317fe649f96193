"""ksample against diffusers' pipelines on a tiny SD1 model, and KSampler / KSamplerAdvanced semantics.

Parity settings: the diffusers schedulers below visit the same sigmas and integer timesteps as our
(sampler, scheduler) pairs (see each case), and our sigma table is built from the pipeline scheduler's own
alphas_cumprod (the same table `from_config` takes from diffusers, passed explicitly here). Prompt embeddings come
from the pipeline's encode_prompt.

Start states: diffusers' DPM-Solver / DDIM / DDPM start from the variance-preserving x_T, so they get
latents = x / sqrt(1 + sigma0^2) for our VE starting point x.

Euler is where the two conventions really differ. From a seed, diffusers' Euler pipeline with "linspace" or
"trailing" spacing starts at noise * init_noise_sigma = noise * sigma_max, while ComfyUI (and nodegraph, which
follows it) start a full denoise at noise * sqrt(1 + sigma_max^2): 0.23% apart at SD1's sigma_max of 14.61, a
different starting latent, not a rounding. So the Euler cases check our start against ComfyUI's formula written
out, measure how far diffusers' own start is from it, and then compare the steps from one common start tensor (the
pipeline's `latents * init_noise_sigma`, handed to ours with add_noise=False).
"""
from __future__ import annotations

import pytest
import torch
from diffusers import (
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
)

from nodegraph_nodes.diffusion.conditioning import Conditioning, ControlSpec
from nodegraph_nodes.diffusion.denoiser import CFGDenoiser
from nodegraph_nodes.diffusion.sampling_run import ksample, ksampler_sigmas, prepare_noise, sample_with_sigmas
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from support.tiny import SD1_SCHEDULER_CONFIG, encoded_sd1, tiny_unet

SEED, STEPS, CFG = 42, 10, 7.5
LATENT = torch.zeros(1, 4, 8, 8)  # 64 x 64 pixels
ATOL = 1e-4


@pytest.fixture(scope="module")
def sd1():
    return encoded_sd1()


def _scheduler(cls, **overrides):
    return cls(**{**SD1_SCHEDULER_CONFIG, **overrides})


def _run_pipeline(pipe, positive, negative, latents, **kwargs):
    return pipe(
        prompt_embeds=positive.embeds, negative_prompt_embeds=negative.embeds, num_inference_steps=STEPS,
        guidance_scale=CFG, output_type="latent", height=64, width=64, latents=latents,
        generator=torch.Generator().manual_seed(SEED), **kwargs,
    ).images


# (our sampler, our scheduler, diffusers scheduler with the same sigmas and timesteps)
VP_START_CASES = [
    # simple = every 100th table entry from 999: diffusers' "trailing" spacing
    ("dpmpp_2m", "simple", lambda: _scheduler(DPMSolverMultistepScheduler, timestep_spacing="trailing")),
    # ddim_uniform = timesteps 901, 801, ..., 1 then sigma 0: "leading" + steps_offset=1, final alpha 1
    ("ddim", "ddim_uniform", lambda: _scheduler(DDIMScheduler, timestep_spacing="leading", set_alpha_to_one=True,
                                                clip_sample=False)),
    # DDPM's posterior step; its noise comes from a generator seeded like ours, drawn in the same order
    ("ddpm", "simple", lambda: _scheduler(DDPMScheduler, timestep_spacing="trailing", clip_sample=False)),
]
EULER_CASES = [
    # normal = timesteps linspace(999, 0, steps): diffusers' "linspace" (integers for 10 steps)
    ("euler", "normal", lambda: _scheduler(EulerDiscreteScheduler, timestep_spacing="linspace")),
    ("euler", "simple", lambda: _scheduler(EulerDiscreteScheduler, timestep_spacing="trailing")),
]


@pytest.mark.parametrize("sampler,scheduler,make", VP_START_CASES, ids=[c[0] for c in VP_START_CASES])
def test_txt2img_matches_stable_diffusion_pipeline(sd1, sampler, scheduler, make):
    pipe, positive, negative, ms = sd1
    pipe.scheduler = make()
    sigmas = ksampler_sigmas(ms, scheduler, sampler, STEPS)
    pipe.scheduler.set_timesteps(STEPS)
    assert pipe.scheduler.timesteps.float().tolist() == ms.timestep(sigmas[:-1]).tolist()

    ours = ksample(pipe.unet, ms, positive, negative, LATENT, seed=SEED, steps=STEPS, cfg=CFG,
                   sampler_name=sampler, scheduler=scheduler)
    start = ms.noise_scaling(float(sigmas[0]), prepare_noise(LATENT, SEED), LATENT)
    theirs = _run_pipeline(pipe, positive, negative, start / (1 + float(sigmas[0]) ** 2) ** 0.5)
    assert (ours - theirs).abs().max() <= ATOL


@pytest.mark.parametrize("sampler,scheduler,make", EULER_CASES, ids=[c[1] for c in EULER_CASES])
def test_txt2img_euler_matches_stable_diffusion_pipeline(sd1, sampler, scheduler, make):
    pipe, positive, negative, ms = sd1
    pipe.scheduler = make()
    sigmas = ksampler_sigmas(ms, scheduler, sampler, STEPS)
    pipe.scheduler.set_timesteps(STEPS)
    torch.testing.assert_close(pipe.scheduler.sigmas, sigmas, rtol=1e-6, atol=0)

    # The start, ComfyUI's formula written out: a full denoise scales the seed's noise by sqrt(1 + sigma_max^2),
    # with sigma_max = sqrt((1 - alphabar_T) / alphabar_T) from the scheduler's own table.
    alphabar = float(pipe.scheduler.alphas_cumprod[-1])
    sigma_max = ((1 - alphabar) / alphabar) ** 0.5
    noise = prepare_noise(LATENT, SEED)
    our_start = ms.noise_scaling(float(sigmas[0]), noise, LATENT)
    torch.testing.assert_close(our_start, noise * (1 + sigma_max**2) ** 0.5, rtol=1e-6, atol=0)
    # diffusers' Euler (linspace / trailing) starts at sigma_max instead: 0.23% smaller.
    init = float(pipe.scheduler.init_noise_sigma)
    assert init == pytest.approx(sigma_max, rel=1e-6)
    assert 1 - init / (1 + sigma_max**2) ** 0.5 == pytest.approx(0.00234, abs=1e-4)

    # From one start tensor, both walk the same path.
    latents = noise * (1 + sigma_max**2) ** 0.5 / init  # what the pipeline multiplies by init_noise_sigma
    common_start = latents * init  # the pipeline's own product, bit for bit
    ours = ksample(pipe.unet, ms, positive, negative, common_start, seed=SEED, steps=STEPS, cfg=CFG,
                   sampler_name=sampler, scheduler=scheduler, add_noise=False)
    theirs = _run_pipeline(pipe, positive, negative, latents)
    assert (ours - theirs).abs().max() <= ATOL


def test_img2img_matches_img2img_pipeline(sd1):
    """denoise 0.5 over 5 steps = the last 5 of a 10-step schedule, as diffusers' strength 0.5 of 10 steps."""
    pipe, positive, negative, ms = sd1
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.scheduler = _scheduler(EulerDiscreteScheduler, timestep_spacing="linspace")
    img2img.set_progress_bar_config(disable=True)
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))  # a 4-channel image is a latent

    ours = ksample(pipe.unet, ms, positive, negative, init, seed=SEED, steps=5, cfg=CFG, sampler_name="euler",
                   scheduler="normal", denoise=0.5)
    theirs = img2img(
        prompt_embeds=positive.embeds, negative_prompt_embeds=negative.embeds, image=init, strength=0.5,
        num_inference_steps=10, guidance_scale=CFG, output_type="latent",
        generator=torch.Generator().manual_seed(SEED),
    ).images
    assert (ours - theirs).abs().max() <= ATOL


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_advanced_split_equals_single_run(sd1, sampler):
    """KSamplerAdvanced 0..4 with leftover noise, then 4..end without adding noise, is the full run."""
    pipe, positive, negative, ms = sd1
    common = dict(seed=SEED, steps=STEPS, cfg=CFG, sampler_name=sampler, scheduler="karras")
    full = ksample(pipe.unet, ms, positive, negative, LATENT, **common)
    first = ksample(pipe.unet, ms, positive, negative, LATENT, **common, start_step=0, last_step=4,
                    force_full_denoise=False)
    second = ksample(pipe.unet, ms, positive, negative, first, **common, add_noise=False, start_step=4,
                     last_step=10000)
    assert (second - full).abs().max() <= 1e-5
    # Leftover noise is really left: the first stage ends at sigma_4, far from the final latent.
    assert (first - full).abs().max() > 1


def _count_unet_calls(unet):
    calls = []
    handle = unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(args[0].shape[0]),
                                            with_kwargs=True)
    return calls, handle


def test_cfg_one_makes_one_unbatched_unet_call_per_step(sd1):
    pipe, positive, negative, ms = sd1
    calls, handle = _count_unet_calls(pipe.unet)
    try:
        ksample(pipe.unet, ms, positive, negative, LATENT, seed=1, steps=6, cfg=1.0, sampler_name="euler",
                scheduler="normal")
        assert calls == [1] * 6
        calls.clear()
        ksample(pipe.unet, ms, positive, negative, LATENT, seed=1, steps=6, cfg=3.0, sampler_name="euler",
                scheduler="normal")
        assert calls == [2] * 6  # cond and uncond batched together
    finally:
        handle.remove()


def test_cfg_one_needs_no_negative(sd1):
    pipe, positive, negative, ms = sd1
    with_neg = ksample(pipe.unet, ms, positive, negative, LATENT, seed=3, steps=4, cfg=1.0, sampler_name="euler",
                       scheduler="normal")
    without = ksample(pipe.unet, ms, positive, None, LATENT, seed=3, steps=4, cfg=1.0, sampler_name="euler",
                      scheduler="normal")
    torch.testing.assert_close(with_neg, without, rtol=0, atol=0)


def test_long_prompt_padding_repeats_context(sd1):
    """A 154-token conditioning against a 77-token one: repeating a context whole does not change attention, so a
    doubled positive gives the same result as the original."""
    pipe, positive, negative, ms = sd1
    doubled = Conditioning(positive.embeds.repeat(1, 2, 1))
    common = dict(seed=9, steps=4, cfg=CFG, sampler_name="euler", scheduler="normal")
    a = ksample(pipe.unet, ms, positive, negative, LATENT, **common)
    b = ksample(pipe.unet, ms, doubled, negative, LATENT, **common)
    assert (a - b).abs().max() <= 1e-4


def test_denoise_zero_and_late_start_return_the_latent(sd1):
    pipe, positive, negative, ms = sd1
    latent = torch.randn(1, 4, 8, 8)
    common = dict(seed=1, steps=5, cfg=CFG, sampler_name="euler", scheduler="normal")
    assert torch.equal(ksample(pipe.unet, ms, positive, negative, latent, **common, denoise=0.0), latent)
    assert torch.equal(ksample(pipe.unet, ms, positive, negative, latent, **common, start_step=5), latent)


def test_callback_sees_every_step_and_can_stop_sampling(sd1):
    pipe, positive, negative, ms = sd1
    seen = []
    ksample(pipe.unet, ms, positive, negative, LATENT, seed=1, steps=5, cfg=CFG, sampler_name="heun",
            scheduler="karras", callback=lambda step, total, x, denoised: seen.append((step, total, x.shape)))
    assert seen == [(i, 5, (1, 4, 8, 8)) for i in range(5)]

    class Interrupted(Exception):
        pass

    def stop(step, total, x, denoised):
        if step == 2:
            raise Interrupted

    calls, handle = _count_unet_calls(pipe.unet)
    try:
        with pytest.raises(Interrupted):
            ksample(pipe.unet, ms, positive, negative, LATENT, seed=1, steps=5, cfg=CFG, sampler_name="euler",
                    scheduler="normal", callback=stop)
    finally:
        handle.remove()
    assert len(calls) == 3


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "uni_pc", "lcm"])
def test_same_seed_same_image_different_seed_different(sd1, sampler):
    pipe, positive, negative, ms = sd1
    common = dict(steps=4, cfg=CFG, sampler_name=sampler, scheduler="karras")
    a = ksample(pipe.unet, ms, positive, negative, LATENT, seed=11, **common)
    b = ksample(pipe.unet, ms, positive, negative, LATENT, seed=11, **common)
    c = ksample(pipe.unet, ms, positive, negative, LATENT, seed=12, **common)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1
    assert torch.isfinite(a).all()


def test_sample_with_sigmas_walks_the_given_sigmas(sd1):
    pipe, positive, negative, ms = sd1
    sigmas = ksampler_sigmas(ms, "karras", "euler", 6)
    direct = sample_with_sigmas(pipe.unet, ms, positive, negative, LATENT, sigmas, seed=4, cfg=CFG,
                                sampler_name="euler")
    via_ksample = ksample(pipe.unet, ms, positive, negative, LATENT, seed=4, steps=6, cfg=CFG,
                          sampler_name="euler", scheduler="karras")
    torch.testing.assert_close(direct, via_ksample, rtol=0, atol=0)


def test_prepare_noise_is_torch_manual_seed_on_cpu():
    latent = torch.zeros(3, 4, 5, 6)
    torch.manual_seed(123)
    expected = torch.randn(3, 4, 5, 6)
    torch.testing.assert_close(prepare_noise(latent, 123), expected, rtol=0, atol=0)
    # batch_index: each sample gets the noise of its index in a one-by-one draw
    torch.manual_seed(7)
    one_by_one = [torch.randn(1, 4, 5, 6) for _ in range(4)]
    picked = prepare_noise(torch.zeros(2, 4, 5, 6), 7, batch_index=[3, 1])
    torch.testing.assert_close(picked, torch.cat([one_by_one[3], one_by_one[1]]), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# ControlNet


@pytest.fixture(scope="module")
def controlnet(sd1):
    net = ControlNetModel.from_unet(sd1[0].unet, conditioning_channels=3).eval()
    # from_unet zero-initialises the output layers; give them weights so the hint matters.
    torch.manual_seed(3)
    with torch.no_grad():
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            module.weight.normal_(0, 0.05)
    return net


def test_controlnet_matches_controlnet_pipeline(sd1, controlnet):
    pipe, positive, negative, ms = sd1
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(8))
    spec_pos = ControlSpec(controlnet, hint, strength=0.8)
    spec_neg = ControlSpec(controlnet, hint, strength=0.8)
    cn_pipe = StableDiffusionControlNetPipeline(
        **{k: v for k, v in pipe.components.items() if k != "image_encoder"}, controlnet=controlnet,
    )
    cn_pipe.scheduler = _scheduler(DPMSolverMultistepScheduler, timestep_spacing="trailing")
    cn_pipe.set_progress_bar_config(disable=True)

    ours = ksample(pipe.unet, ms, positive.with_control(spec_pos), negative.with_control(spec_neg), LATENT,
                   seed=SEED, steps=STEPS, cfg=CFG, sampler_name="dpmpp_2m", scheduler="simple")
    plain = ksample(pipe.unet, ms, positive, negative, LATENT, seed=SEED, steps=STEPS, cfg=CFG,
                    sampler_name="dpmpp_2m", scheduler="simple")
    sigma0 = float(ksampler_sigmas(ms, "simple", "dpmpp_2m", STEPS)[0])
    start = ms.noise_scaling(sigma0, prepare_noise(LATENT, SEED), LATENT) / (1 + sigma0**2) ** 0.5
    theirs = cn_pipe(
        prompt_embeds=positive.embeds, negative_prompt_embeds=negative.embeds, image=hint.movedim(-1, 1),
        controlnet_conditioning_scale=0.8, num_inference_steps=STEPS, guidance_scale=CFG, output_type="latent",
        height=64, width=64, latents=start,
    ).images
    assert (ours - theirs).abs().max() <= ATOL
    assert (ours - plain).abs().max() > 1e-2  # the ControlNet did something


def test_controlnet_range_and_batching(sd1, controlnet):
    """Shared specs run once per step on the batched halves; a spec outside its range does nothing; a control on
    the positive only runs on that half."""
    pipe, positive, negative, ms = sd1
    hint = torch.rand(1, 32, 48, 3, generator=torch.Generator().manual_seed(8))  # resized (cover) to 64 x 64
    shared = ControlSpec(controlnet, hint)
    sigma = torch.tensor([5.0])
    x = torch.randn(1, 4, 8, 8)

    both = CFGDenoiser(pipe.unet, ms, positive.with_control(shared), negative.with_control(shared), CFG)
    both(x, sigma)
    assert both.controlnet_calls == 1

    late = ControlSpec(controlnet, hint, start_percent=0.9, end_percent=1.0)  # only near the end of the schedule
    gated = CFGDenoiser(pipe.unet, ms, positive.with_control(late), negative.with_control(late), CFG)
    plain = CFGDenoiser(pipe.unet, ms, positive, negative, CFG)
    torch.testing.assert_close(gated(x, sigma), plain(x, sigma), rtol=0, atol=0)
    assert gated.controlnet_calls == 0

    positive_only = CFGDenoiser(pipe.unet, ms, positive.with_control(shared), negative, CFG)
    out = positive_only(x, sigma)
    assert positive_only.controlnet_calls == 1
    assert (out - plain(x, sigma)).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# SDXL-family conditioning


def test_sdxl_conditioning_defaults_time_ids_to_the_latent_size():
    unet = tiny_unet(addition_embed_type="text_time", addition_time_embed_dim=8,
                     projection_class_embeddings_input_dim=16 + 6 * 8)
    ms = DiscreteModelSampling.from_config(SD1_SCHEDULER_CONFIG)
    g = torch.Generator().manual_seed(0)
    embeds, pooled = torch.randn(1, 77, 32, generator=g), torch.randn(1, 16, generator=g)
    x, sigma = torch.randn(2, 4, 8, 12, generator=g), torch.tensor([3.0, 3.0])

    def run(time_ids):
        c = Conditioning(embeds, pooled=pooled, time_ids=time_ids)
        return CFGDenoiser(unet, ms, c, Conditioning(embeds * 0, pooled=pooled * 0, time_ids=time_ids), CFG)(x, sigma)

    default = run(None)
    torch.testing.assert_close(default, run(torch.tensor([[64.0, 96.0, 0, 0, 64.0, 96.0]])), rtol=0, atol=0)
    assert (default - run(torch.tensor([[1024.0, 1024.0, 0, 0, 1024.0, 1024.0]]))).abs().max() > 1e-4
