"""End to end through our nodes: a ComfyUI txt2img workflow equals StableDiffusionPipeline on the same tiny model.

Library-level parity (every sampler, img2img, KSamplerAdvanced splits, ControlNet) is in test_ksampler_parity.py;
this test checks the glue on top: checkpoint loading, text encoding, latent scaling, seeds and the node layer. The
reference pipeline is diffusers' `from_single_file` on the same checkpoint file.
"""
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

from nodegraph_nodes.diffusion.families import FAMILIES
from nodegraph_nodes.diffusion.sampling_run import ksampler_sigmas, prepare_noise
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from support.sd import Runner, diffusers_pipeline, make_folders
from support.workflows import txt2img


def test_txt2img_workflow_equals_stable_diffusion_pipeline(models_root, tmp_path):
    runner = Runner(make_folders(tmp_path, models_root))
    # 5 steps: ComfyUI's "simple" spacing takes every (1000 / steps)-th sigma, which is diffusers' "trailing"
    # spacing exactly when steps divides 1000 (for 6 steps they round timestep 833 vs 832).
    steps, seed, cfg = 5, 123, 6.5
    prompt = txt2img(**{"3.steps": steps, "3.seed": seed, "3.cfg": cfg, "3.sampler_name": "dpmpp_2m",
                        "3.scheduler": "simple", "6.text": "a red square", "7.text": "blurry"})
    ours = runner.run(prompt).values["3"][0]["samples"]

    # diffusers reads the same file itself (not through our loader), so a loader bug fails this test
    pipe = diffusers_pipeline(StableDiffusionPipeline, models_root, "tiny_sd1", safety_checker=None,
                              requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    # Same starting point: our seeded CPU noise at sigma_max, in the pipeline's variance-preserving form.
    ms = DiscreteModelSampling.from_config(dict(pipe.scheduler.config))
    sigma0 = float(ksampler_sigmas(ms, "simple", "dpmpp_2m", steps)[0])
    noise = prepare_noise(torch.zeros(1, 4, 8, 8), seed)
    start = ms.noise_scaling(sigma0, noise, torch.zeros_like(noise)) / (1 + sigma0**2) ** 0.5
    theirs = pipe(
        "a red square", negative_prompt="blurry", num_inference_steps=steps, guidance_scale=cfg, height=64, width=64,
        latents=start, output_type="latent",
    ).images
    scale = FAMILIES["sd1"].latent_scale
    assert (ours * scale - theirs).abs().max() <= 1e-4
