"""The extra files of `make-tiny-models` through the example workflows: an SD2 v-prediction checkpoint
(txt2img.json), an SDXL ControlNet and a diffusers-layout ControlNet single file (controlnet_canny.json).

References are diffusers' own: pipelines built with `from_single_file` on the same files (configs from the
diffusers folders make-tiny-models writes beside them), never from nodegraph's loader. diffusers cannot read an
original-layout SDXL ControlNet single file (its converter leaves SDXL's label_emb out), so that reference
ControlNet is built in memory by the same deterministic builder make-tiny-models uses.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetPipeline,
)

from nodegraph_nodes.diffusion.families import FAMILIES
from nodegraph_nodes.diffusion.sampling_run import ksampler_sigmas, prepare_noise
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from nodegraph_nodes.diffusion.tiny import tiny_controlnet, tiny_sdxl
from support.sd import Runner, diffusers_pipeline, make_folders

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
ATOL = 1e-4


@pytest.fixture(scope="module")
def runner(tmp_path_factory, models_root):
    folders = make_folders(tmp_path_factory.mktemp("run"), models_root)
    folders.input_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(WORKFLOWS / "inputs" / "example.png", folders.input_dir / "example.png")
    return Runner(folders)


def example(name: str, **changes) -> dict:
    """An example workflow with `"node title.input": value` changes."""
    prompt = copy.deepcopy(json.loads((WORKFLOWS / name).read_text()))
    by_title = {node["_meta"]["title"]: node for node in prompt.values()}
    for key, value in changes.items():
        title, name = key.rsplit(".", 1)
        assert name in by_title[title]["inputs"], key
        by_title[title]["inputs"][name] = value
    return prompt


def node_id(prompt: dict, title: str) -> str:
    return next(nid for nid, node in prompt.items() if node["_meta"]["title"] == title)


def run_ok(runner, prompt):
    run = runner.run(prompt)
    assert run.status == "success", run.error
    assert run.outputs[node_id(prompt, "Save Image")]["images"]
    return run


def test_sd2_v_prediction_txt2img_equals_diffusers(runner, models_root):
    """txt2img.json on tiny_sd2 (v-prediction) against StableDiffusionPipeline.from_single_file, prompt text and
    all. dpmpp_2m + simple visits diffusers' "trailing" timesteps when steps divide 1000; DPM-Solver starts from the
    variance-preserving latent, our seeded start / sqrt(1 + sigma0^2)."""
    steps, seed, cfg = 5, 11, 6.0
    prompt = example("txt2img.json", **{
        "Load Checkpoint.ckpt_name": "tiny_sd2.safetensors", "KSampler.steps": steps, "KSampler.seed": seed,
        "KSampler.cfg": cfg, "KSampler.sampler_name": "dpmpp_2m", "KSampler.scheduler": "simple",
        "Positive Prompt.text": "a red square", "Negative Prompt.text": "blurry",
    })
    run = run_ok(runner, prompt)
    ours = run.values[node_id(prompt, "KSampler")][0]["samples"]
    assert run.values[node_id(prompt, "Load Checkpoint")][0].family == "sd2"

    pipe = diffusers_pipeline(StableDiffusionPipeline, models_root, "tiny_sd2", safety_checker=None,
                            requires_safety_checker=False)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    sampling = DiscreteModelSampling.from_config(dict(pipe.scheduler.config))
    sigma0 = float(ksampler_sigmas(sampling, "simple", "dpmpp_2m", steps)[0])
    zeros = torch.zeros(1, 4, 8, 8)
    start = sampling.noise_scaling(sigma0, prepare_noise(zeros, seed), zeros) / (1 + sigma0**2) ** 0.5
    theirs = pipe("a red square", negative_prompt="blurry", num_inference_steps=steps, guidance_scale=cfg,
                  height=64, width=64, latents=start, output_type="latent").images
    scale = FAMILIES["sd2"].latent_scale
    assert (ours * scale - theirs).abs().max() <= ATOL

    # the same run read as epsilon-prediction is another image: v-prediction is what made them agree
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, prediction_type="epsilon")
    as_epsilon = pipe("a red square", negative_prompt="blurry", num_inference_steps=steps, guidance_scale=cfg,
                      height=64, width=64, latents=start, output_type="latent").images
    assert (ours * scale - as_epsilon).abs().max() > 0.05


def canny(**changes) -> dict:
    return example("controlnet_canny.json", **{"KSampler.steps": 6, **changes})


def test_diffusers_layout_controlnet_file_runs_controlnet_canny(runner):
    """The diffusers-layout single file (no config) gives exactly the original-layout file's result: the same
    ControlNet, read from the other key layout, and the hint steers the picture."""
    common = {"Load Checkpoint.ckpt_name": "tiny_sd1.safetensors"}
    lone = canny(**common, **{"Load ControlNet Model.control_net_name": "tiny_controlnet_sd1_diffusers_layout.safetensors"})
    original = canny(**common, **{"Load ControlNet Model.control_net_name": "tiny_controlnet_sd1.safetensors"})
    off = canny(**common, **{"Load ControlNet Model.control_net_name": "tiny_controlnet_sd1.safetensors",
                             "Apply ControlNet.strength": 0.0})
    ksampler = node_id(lone, "KSampler")
    a, b, c = (run_ok(runner, p).values[ksampler][0]["samples"] for p in (lone, original, off))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.05


def test_sdxl_controlnet_file_runs_controlnet_canny_and_equals_diffusers(runner, models_root):
    """controlnet_canny.json with tiny_sdxl and tiny_controlnet_sdxl against StableDiffusionXLControlNetPipeline
    (from_single_file for the checkpoint). Euler + normal = diffusers' "linspace" timesteps; diffusers' Euler
    starts at sigma_max where ComfyUI starts at sqrt(1 + sigma_max^2), so the pipeline is given our start."""
    steps, seed, cfg, strength = 10, 5, 7.0, 0.8  # 10 steps: integer timesteps 999, 888, ..., 0
    prompt = canny(**{
        "Load Checkpoint.ckpt_name": "tiny_sdxl.safetensors",
        "Load ControlNet Model.control_net_name": "tiny_controlnet_sdxl.safetensors",
        "KSampler.seed": seed, "KSampler.cfg": cfg, "KSampler.steps": steps, "Apply ControlNet.strength": strength,
    })
    run = run_ok(runner, prompt)
    ours = run.values[node_id(prompt, "KSampler")][0]["samples"]
    hint = run.values[node_id(prompt, "Canny")][0]
    positive = run.values[node_id(prompt, "Positive Prompt")][0]
    negative = run.values[node_id(prompt, "Negative Prompt")][0]
    off = copy.deepcopy(prompt)
    off[node_id(prompt, "Apply ControlNet")]["inputs"]["strength"] = 0.0
    plain = run_ok(runner, off).values[node_id(prompt, "KSampler")][0]["samples"]

    pipe = diffusers_pipeline(StableDiffusionXLControlNetPipeline, models_root, "tiny_sdxl",
                            controlnet=tiny_controlnet(tiny_sdxl(0).unet, 0))
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    sampling = DiscreteModelSampling.from_config(dict(pipe.scheduler.config))
    sigmas = ksampler_sigmas(sampling, "normal", "euler", steps)
    pipe.scheduler.set_timesteps(steps)
    assert pipe.scheduler.timesteps.tolist() == sampling.timestep(sigmas[:-1]).tolist()
    zeros = torch.zeros(1, 4, 8, 8)
    start = sampling.noise_scaling(float(sigmas[0]), prepare_noise(zeros, seed), zeros)
    theirs = pipe(
        prompt_embeds=positive.embeds, pooled_prompt_embeds=positive.pooled, negative_prompt_embeds=negative.embeds,
        negative_pooled_prompt_embeds=negative.pooled, image=hint.movedim(-1, 1),
        controlnet_conditioning_scale=strength, num_inference_steps=steps, guidance_scale=cfg, height=64, width=64,
        latents=start / pipe.scheduler.init_noise_sigma, output_type="latent",
    ).images
    scale = FAMILIES["sdxl"].latent_scale
    assert (ours * scale - theirs).abs().max() <= ATOL
    assert (ours - plain).abs().max() > 0.05
