"""SDXL base + refiner through the nodes on the tiny models: the SDXL text encoders' conditioning, the SDXLRefiner
node against ComfyUI's two-KSamplerAdvanced recipe (bit-equal) and against diffusers' SDXL pipelines.

Parity settings: Euler with the "normal" scheduler walks timesteps linspace(999, 0, steps), which is diffusers'
EulerDiscreteScheduler with timestep_spacing="linspace"; with 10 steps these are integers (999, 888, ..., 0), so both
projects feed the UNet the same timesteps. diffusers' Euler would start from noise * sigma_max where ComfyUI starts
from noise * sqrt(1 + sigma_max^2) (see test_ksampler_parity.py), so diffusers is handed our start: latents =
start / init_noise_sigma, which it multiplies back (rounding by an ulp; the tolerance covers that). The refiner stage
continues the latent exactly as the base left it (diffusers' img2img with denoising_start adds no noise). The
reference pipelines are read from the same checkpoint files by diffusers' own `from_single_file`.
"""
from __future__ import annotations

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from nodegraph_nodes.diffusion import ops
from nodegraph_nodes.diffusion.handles import ModelHandle
from nodegraph_nodes.diffusion.sampling_run import ksampler_sigmas, prepare_noise
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from support.sd import Runner, diffusers_pipeline, make_folders

SEED, STEPS, CFG, SWITCH = 42, 10, 5.0, 8
SIZE = 64
ATOL = 1e-4
BASE, REFINER = "tiny_sdxl.safetensors", "tiny_sdxl_refiner.safetensors"


@pytest.fixture(scope="module")
def runner(tmp_path_factory, models_root):
    return Runner(make_folders(tmp_path_factory.mktemp("run"), models_root))


def _sampler(cls: str, model, positive, negative, latent, **inputs) -> dict:
    common = {"steps": STEPS, "cfg": CFG, "sampler_name": "euler", "scheduler": "normal"}
    links = {"model": model, "positive": positive, "negative": negative, "latent_image": latent}
    return {"class_type": cls, "inputs": {**common, **inputs, **links}}


def base_and_refiner(refiner_stage: str = "SDXLRefiner", **switch) -> dict:
    """Base KSamplerAdvanced to step SWITCH with leftover noise ("10"), then the refiner stage ("11")."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": BASE}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": REFINER}},
        "3": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["1", 1], "width": SIZE, "height": SIZE, "crop_w": 0, "crop_h": 0, "target_width": SIZE,
            "target_height": SIZE, "text_g": "a red square", "text_l": "a red square"}},
        "4": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["1", 1], "width": SIZE, "height": SIZE, "crop_w": 0, "crop_h": 0, "target_width": SIZE,
            "target_height": SIZE, "text_g": "blurry", "text_l": "blurry"}},
        "5": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
            "ascore": 6.0, "width": SIZE, "height": SIZE, "text": "a red square", "clip": ["2", 1]}},
        "6": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
            "ascore": 2.5, "width": SIZE, "height": SIZE, "text": "blurry", "clip": ["2", 1]}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "10": _sampler("KSamplerAdvanced", ["1", 0], ["3", 0], ["4", 0], ["7", 0], add_noise="enable",
                       noise_seed=SEED, start_at_step=0, end_at_step=SWITCH, return_with_leftover_noise="enable"),
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["2", 2]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    }
    if refiner_stage == "SDXLRefiner":
        switch = switch or {"switch_at": float(SWITCH), "switch_unit": "step"}
        prompt["11"] = _sampler("SDXLRefiner", ["2", 0], ["5", 0], ["6", 0], ["10", 0], noise_seed=SEED, **switch)
    else:
        prompt["11"] = _sampler("KSamplerAdvanced", ["2", 0], ["5", 0], ["6", 0], ["10", 0], add_noise="disable",
                                noise_seed=SEED, start_at_step=SWITCH, end_at_step=10000,
                                return_with_leftover_noise="disable")
    return prompt


def run_ok(runner, prompt):
    run = runner.run(prompt)
    assert run.status == "success", run.error
    return run


def samples(run, nid: str) -> torch.Tensor:
    return run.values[nid][0]["samples"]


def conditioning(run, nid: str):
    return run.values[nid][0]


# ---------------------------------------------------------------------------------------------------------------
# Text encoders


def test_clip_text_encode_sdxl_sets_size_conditioning_and_a_prompt_per_encoder(runner):
    prompt = base_and_refiner()
    prompt["3"]["inputs"].update(width=1024, height=768, crop_w=16, crop_h=32, target_width=896, target_height=640,
                                 text_g="a red square", text_l="a blue circle")
    run = run_ok(runner, prompt)
    clip = run.values["1"][1]
    mixed = conditioning(run, "3")
    runtime = runner.executor.runtime
    red, blue = ops.encode_text(runtime, clip, "a red square"), ops.encode_text(runtime, clip, "a blue circle")
    # (original size, crop top-left, target size), each as (height, width): the widgets list width first
    assert mixed.time_ids.tolist() == [[768.0, 1024.0, 32.0, 16.0, 640.0, 896.0]]
    width_l = 32  # the tiny CLIP-L's hidden size; the bigG features follow
    torch.testing.assert_close(mixed.embeds[..., :width_l], blue.embeds[..., :width_l], rtol=0, atol=0)
    torch.testing.assert_close(mixed.embeds[..., width_l:], red.embeds[..., width_l:], rtol=0, atol=0)
    torch.testing.assert_close(mixed.pooled, red.pooled, rtol=0, atol=0)  # pooled from bigG, i.e. text_g
    assert red.time_ids is None


def test_plain_clip_text_encode_on_sdxl_matches_diffusers_and_defaults_to_the_latent_size(runner, models_root):
    pipe = diffusers_pipeline(StableDiffusionXLPipeline, models_root, BASE)  # diffusers' own loader
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        "a red square", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt="blurry",
    )
    prompt = base_and_refiner()
    prompt["3"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}}
    prompt["4"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}}
    plain = run_ok(runner, prompt)
    torch.testing.assert_close(conditioning(plain, "3").embeds, embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(conditioning(plain, "3").pooled, pooled, rtol=0, atol=1e-6)
    torch.testing.assert_close(conditioning(plain, "4").embeds, negative, rtol=0, atol=1e-6)
    torch.testing.assert_close(conditioning(plain, "4").pooled, negative_pooled, rtol=0, atol=1e-6)
    # without size conditioning the sampler uses (64, 64, 0, 0, 64, 64): what CLIPTextEncodeSDXL at 64 says
    sized = run_ok(runner, base_and_refiner())
    assert torch.equal(samples(plain, "10"), samples(sized, "10"))
    # and the size conditioning matters
    prompt = base_and_refiner()
    prompt["3"]["inputs"].update(width=1024, height=1024, target_width=1024, target_height=1024)
    assert not torch.allclose(samples(run_ok(runner, prompt), "10"), samples(sized, "10"))


def test_refiner_text_encode_and_comfyui_defaults_for_plain_encoding(runner):
    sized = run_ok(runner, base_and_refiner())
    assert conditioning(sized, "5").time_ids.tolist() == [[64.0, 64.0, 0.0, 0.0, 6.0]]
    assert conditioning(sized, "6").time_ids.tolist() == [[64.0, 64.0, 0.0, 0.0, 2.5]]
    # Plain CLIPTextEncode on the refiner: latent size, aesthetic score 6 for the positive and 2.5 for the negative
    prompt = base_and_refiner()
    prompt["5"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["2", 1]}}
    prompt["6"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["2", 1]}}
    assert torch.equal(samples(run_ok(runner, prompt), "11"), samples(sized, "11"))
    # A base conditioning on the refiner keeps its size and crop and takes the default score (ComfyUI does this)
    prompt = base_and_refiner()
    prompt["5"] = {"class_type": "CLIPTextEncodeSDXL", "inputs": {
        **prompt["3"]["inputs"], "clip": ["2", 1]}}
    prompt["6"] = {"class_type": "CLIPTextEncodeSDXL", "inputs": {**prompt["4"]["inputs"], "clip": ["2", 1]}}
    assert torch.equal(samples(run_ok(runner, prompt), "11"), samples(sized, "11"))


def test_aesthetic_score_changes_the_refined_image(runner):
    sized = run_ok(runner, base_and_refiner())
    prompt = base_and_refiner()
    prompt["5"]["inputs"]["ascore"] = 9.0
    changed = run_ok(runner, prompt)
    assert torch.equal(samples(changed, "10"), samples(sized, "10"))
    assert (samples(changed, "11") - samples(sized, "11")).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Refiner stage


def test_sdxl_refiner_node_equals_the_two_ksampler_advanced_recipe(runner):
    pair = run_ok(runner, base_and_refiner("KSamplerAdvanced"))
    by_step = run_ok(runner, base_and_refiner())
    by_fraction = run_ok(runner, base_and_refiner(switch_at=0.8, switch_unit="fraction"))
    assert torch.equal(samples(by_step, "11"), samples(pair, "11"))
    assert torch.equal(samples(by_fraction, "11"), samples(pair, "11"))
    # the base stage really left noise for the refiner, and the refiner really removed it
    assert (samples(pair, "10") - samples(pair, "11")).abs().max() > 0.5


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m"])
def test_sdxl_refiner_node_equals_the_recipe_for_other_samplers(runner, sampler):
    pair, node = base_and_refiner("KSamplerAdvanced"), base_and_refiner()
    for prompt in (pair, node):
        for nid in ("10", "11"):
            prompt[nid]["inputs"].update(sampler_name=sampler, scheduler="karras")
    assert torch.equal(samples(run_ok(runner, node), "11"), samples(run_ok(runner, pair), "11"))


def test_switch_inputs_are_validated(runner):
    for switch in ({"switch_at": 8.5, "switch_unit": "step"}, {"switch_at": 1.5, "switch_unit": "fraction"}):
        result = runner.validate(base_and_refiner(**switch))
        assert not result.ok and "switch_at" in str(result.node_errors["11"])


def _diffusers_split(scheduler_config: dict, steps: int, fraction: float) -> int:
    """How many steps diffusers' SDXL base pipeline takes before `denoising_end=fraction`."""
    scheduler = EulerDiscreteScheduler.from_config(scheduler_config, timestep_spacing="linspace")
    scheduler.set_timesteps(steps)
    cutoff = int(round(scheduler.config.num_train_timesteps - fraction * scheduler.config.num_train_timesteps))
    return len([t for t in scheduler.timesteps if t >= cutoff])


@pytest.mark.parametrize("steps,fraction", [(10, 0.8), (10, 0.75), (25, 0.8), (25, 0.7), (30, 0.85), (7, 0.5)])
def test_switch_fraction_counts_steps_like_diffusers(models_root, steps, fraction):
    """A fraction of the schedule is counted on timesteps, not steps: 10 steps at 0.75 give 7, not round(7.5)."""
    config = read_checkpoint_file(models_root / "checkpoints" / REFINER).scheduler_config
    model = ModelHandle(None, "sdxl_refiner", config)
    ours = ops.switch_step(model, "euler", "normal", steps, fraction)
    assert ours == _diffusers_split(config, steps, fraction)
    if (steps, fraction) == (10, 0.75):
        assert ours == 7
    assert ops.switch_step(model, "euler", "normal", steps, 0.0) == 0
    assert ops.switch_step(model, "euler", "normal", steps, 1.0) == steps


def test_base_and_refiner_match_diffusers_sdxl_pipelines(runner, models_root):
    """StableDiffusionXLPipeline(denoising_end=0.8) + StableDiffusionXLImg2ImgPipeline(denoising_start=0.8) against
    KSamplerAdvanced + SDXLRefiner(fraction 0.8), all on the same tiny checkpoint files."""
    run = run_ok(runner, base_and_refiner(switch_at=0.8, switch_unit="fraction"))
    # both pipelines read the same files with diffusers' own single-file loader, not ours
    pipe = diffusers_pipeline(StableDiffusionXLPipeline, models_root, BASE)
    refine = diffusers_pipeline(StableDiffusionXLImg2ImgPipeline, models_root, REFINER, requires_aesthetics_score=True)
    for p in (pipe, refine):
        p.scheduler = EulerDiscreteScheduler.from_config(p.scheduler.config, timestep_spacing="linspace")
    scale = pipe.vae.config.scaling_factor

    sampling = DiscreteModelSampling.from_config(dict(pipe.scheduler.config))
    sigmas = ksampler_sigmas(sampling, "normal", "euler", STEPS)
    pipe.scheduler.set_timesteps(STEPS)
    assert pipe.scheduler.timesteps.tolist() == sampling.timestep(sigmas[:-1]).tolist()  # 999, 888, ..., 0
    zeros = torch.zeros(1, 4, SIZE // 8, SIZE // 8)
    start = sampling.noise_scaling(float(sigmas[0]), prepare_noise(zeros, SEED), zeros)

    pos, neg = conditioning(run, "3"), conditioning(run, "4")
    rpos, rneg = conditioning(run, "5"), conditioning(run, "6")
    common = dict(num_inference_steps=STEPS, guidance_scale=CFG, output_type="latent")
    theirs_base = pipe(
        prompt_embeds=pos.embeds, pooled_prompt_embeds=pos.pooled, negative_prompt_embeds=neg.embeds,
        negative_pooled_prompt_embeds=neg.pooled, height=SIZE, width=SIZE,
        latents=start / pipe.scheduler.init_noise_sigma, denoising_end=0.8, **common,
    ).images
    theirs = refine(
        prompt_embeds=rpos.embeds, pooled_prompt_embeds=rpos.pooled, negative_prompt_embeds=rneg.embeds,
        negative_pooled_prompt_embeds=rneg.pooled, image=theirs_base, denoising_start=0.8, **common,
    ).images
    assert (samples(run, "10") * scale - theirs_base).abs().max() <= ATOL
    assert (samples(run, "11") * scale - theirs).abs().max() <= ATOL
    assert (theirs - theirs_base).abs().max() > 0.1  # the refiner stage did something


def test_refiner_stage_on_a_finished_latent_changes_nothing(runner):
    """start_at_step at or past the end: the latent comes back unchanged (KSamplerAdvanced's rule)."""
    prompt = base_and_refiner(switch_at=float(STEPS), switch_unit="step")
    run = run_ok(runner, prompt)
    assert torch.equal(samples(run, "11"), samples(run, "10"))
