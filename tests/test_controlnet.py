"""ControlNet through the nodes on the tiny models: parity with diffusers' StableDiffusionControlNetPipeline, the
strength and start/end window semantics, the old ControlNetApply, chaining, hint resizing, and the Canny node.

Parity settings (see test_ksampler_parity.py): dpmpp_2m with the "simple" scheduler visits the timesteps of
diffusers' DPMSolverMultistepScheduler with "trailing" spacing (999, 899, ..., 99); diffusers' DPM-Solver starts
from the variance-preserving latent, so it gets our seeded start divided by sqrt(1 + sigma0^2). Prompt embeddings
are the CLIPTextEncode nodes' outputs. The tiny ControlNet's output layers are non-zero, so its hint matters. The
reference pipeline and ControlNet are read from the same files by diffusers' own `from_single_file`.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    DPMSolverMultistepScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)
from PIL import Image, ImageDraw

from nodegraph_nodes.diffusion import ops
from nodegraph_nodes.diffusion.conditioning import ControlSpec
from nodegraph_nodes.diffusion.sampling_run import ksampler_sigmas, prepare_noise
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file
from nodegraph_nodes.diffusion.cache_readers import model_cache
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from nodegraph_nodes.diffusion.image_ops import canny_edges
from support.sd import Runner, diffusers_pipeline, make_folders

SEED, STEPS, CFG = 42, 10, 7.5
ATOL = 1e-4
CONTROLNET = "tiny_controlnet_sd1.safetensors"


def _hint_images(folder) -> None:
    """hint.png: shapes on black (64 x 64); wide.png: other shapes, 128 x 96, to be cropped and resized."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (64, 64))
    draw = ImageDraw.Draw(image)
    draw.ellipse((12, 12, 40, 40), outline=(255, 255, 255), width=2)
    draw.rectangle((36, 30, 58, 56), outline=(255, 255, 255), width=2)
    image.save(folder / "hint.png")
    wide = Image.new("RGB", (128, 96))
    ImageDraw.Draw(wide).polygon([(20, 80), (64, 10), (108, 80)], outline=(255, 255, 255), width=3)
    wide.save(folder / "wide.png")


@pytest.fixture(scope="module")
def runner(tmp_path_factory, models_root):
    folders = make_folders(tmp_path_factory.mktemp("run"), models_root)
    _hint_images(folders.input_dir)
    return Runner(folders)


def txt2img(*controls: dict, sampler: str = "dpmpp_2m", scheduler: str = "simple", **ksampler) -> dict:
    """SD1 txt2img at 64 x 64 with Apply ControlNet nodes chained in order. Each control is the inputs of one
    ControlNetApplyAdvanced ("class_type" may pick ControlNetApply); "image" names an input file."""
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    positive, negative = ["6", 0], ["7", 0]
    for i, control in enumerate(controls):
        control = dict(control)
        cls = control.pop("class_type", "ControlNetApplyAdvanced")
        image_id, apply_id = str(40 + i), str(30 + i)
        prompt[image_id] = {"class_type": "LoadImage", "inputs": {"image": control.pop("image", "hint.png")}}
        links = {"control_net": control.pop("control_net", ["20", 0]), "image": [image_id, 0]}
        if cls == "ControlNetApply":
            prompt[apply_id] = {"class_type": cls, "inputs": {"conditioning": positive, **links, **control}}
            positive = [apply_id, 0]
        else:
            inputs = {"positive": positive, "negative": negative, **links, "strength": 1.0, "start_percent": 0.0,
                      "end_percent": 1.0, **control}
            prompt[apply_id] = {"class_type": cls, "inputs": inputs}
            positive, negative = [apply_id, 0], [apply_id, 1]
    prompt["3"] = {"class_type": "KSampler", "inputs": {
        "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0,
        "model": ["4", 0], "positive": positive, "negative": negative, "latent_image": ["5", 0], **ksampler}}
    return prompt


def run_ok(runner, prompt):
    run = runner.run(prompt)
    assert run.status == "success", run.error
    return run


def latent(run, nid: str = "3") -> torch.Tensor:
    return run.values[nid][0]["samples"]


@pytest.fixture(scope="module")
def plain(runner):
    return latent(run_ok(runner, txt2img()))


# ---------------------------------------------------------------------------------------------------------------
# Parity


def test_controlnet_txt2img_matches_diffusers_controlnet_pipeline(runner, models_root, plain):
    run = run_ok(runner, txt2img({"strength": 0.8}))
    # the reference reads both files with diffusers' own single-file loader, not ours
    controlnet = ControlNetModel.from_single_file(
        str(models_root / "controlnet" / CONTROLNET), config=str(models_root / "controlnet" / "tiny_controlnet_sd1"),
        local_files_only=True,
    )
    sd1 = diffusers_pipeline(StableDiffusionPipeline, models_root, "tiny_sd1", safety_checker=None,
                             requires_safety_checker=False)
    pipe = StableDiffusionControlNetPipeline(
        **{k: v for k, v in sd1.components.items() if k != "image_encoder"}, controlnet=controlnet,
    )
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(sd1.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)
    sampling = DiscreteModelSampling.from_config(dict(sd1.scheduler.config))
    sigmas = ksampler_sigmas(sampling, "simple", "dpmpp_2m", STEPS)
    pipe.scheduler.set_timesteps(STEPS)
    assert pipe.scheduler.timesteps.float().tolist() == sampling.timestep(sigmas[:-1]).tolist()

    zeros = torch.zeros(1, 4, 8, 8)
    sigma0 = float(sigmas[0])
    start = sampling.noise_scaling(sigma0, prepare_noise(zeros, SEED), zeros) / (1 + sigma0**2) ** 0.5
    hint = run.values["40"][0]
    theirs = pipe(
        prompt_embeds=run.values["6"][0].embeds, negative_prompt_embeds=run.values["7"][0].embeds,
        image=hint.movedim(-1, 1), controlnet_conditioning_scale=0.8, num_inference_steps=STEPS, guidance_scale=CFG,
        output_type="latent", height=64, width=64, latents=start,
    ).images
    scale = pipe.vae.config.scaling_factor
    assert (latent(run) * scale - theirs).abs().max() <= ATOL
    assert (latent(run) - plain).abs().max() > 0.1  # the ControlNet steered the image


# ---------------------------------------------------------------------------------------------------------------
# Strength, window, old node, chaining


def test_strength_zero_equals_plain_exactly(runner, plain):
    for cls in ("ControlNetApplyAdvanced", "ControlNetApply"):
        assert torch.equal(latent(run_ok(runner, txt2img({"class_type": cls, "strength": 0.0}))), plain)


def test_strength_zero_inside_the_sampler_equals_plain_exactly(runner, plain):
    """Even when the ControlNet runs (a ControlSpec made by hand, not by the node), scale 0 adds exact zeros."""
    run = run_ok(runner, txt2img({"strength": 1.0}))
    spec = ControlSpec(run.values["20"][0], run.values["40"][0], strength=0.0)
    positive, negative = run.values["6"][0].with_control(spec), run.values["7"][0].with_control(spec)
    ours = ops.run_ksampler(
        run.values["4"][0], positive, negative, {"samples": torch.zeros(1, 4, 8, 8)},
        QuietContext(runner.executor.runtime),
        seed=SEED, steps=STEPS, cfg=CFG, sampler_name="dpmpp_2m", scheduler="simple",
    )
    assert torch.equal(ours, plain)


class QuietContext:
    """What ops.run_ksampler needs of a node context, without previews."""

    previews = False

    def __init__(self, runtime) -> None:
        self.runtime = runtime

    def progress(self, value: int, total: int, preview=None) -> None:
        pass


def _controlnet_timesteps(runner, prompt, loaders=("20",)) -> list[float]:
    """The timesteps at which the ControlNets of the `loaders` nodes ran during one (uncached) run of `prompt`."""
    handles = [run_ok(runner, prompt).values[nid][0] for nid in loaders]
    calls: list[float] = []
    hooks = []
    for handle in handles:
        with model_cache(runner.executor.runtime).use(handle.ref) as net:
            hooks.append(net.register_forward_pre_hook(lambda module, args: calls.append(float(args[1][0]))))
    try:
        runner.executor.cache.clear()
        run_ok(runner, prompt)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def test_end_percent_zero_equals_plain(runner, plain):
    assert torch.equal(latent(run_ok(runner, txt2img({"start_percent": 0.0, "end_percent": 0.0}))), plain)


def test_window_runs_the_controlnet_only_inside_it(runner, models_root):
    """start 0.3, end 0.7: the ControlNet runs exactly on the steps whose sigma lies between the sigmas at 30% and
    70% of the schedule (ComfyUI's percent_to_sigma), and the steps before the window equal a plain run."""
    window = {"start_percent": 0.3, "end_percent": 0.7}
    config = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1.safetensors").scheduler_config
    sampling = DiscreteModelSampling.from_config(config)
    sigmas = ksampler_sigmas(sampling, "simple", "dpmpp_2m", STEPS)[:-1]
    high, low = sampling.percent_to_sigma(0.3), sampling.percent_to_sigma(0.7)
    inside = [i for i, s in enumerate(sigmas.tolist()) if low <= s <= high]
    assert 0 < len(inside) < STEPS - 2 and inside[0] > 0  # a real window, not the whole run

    timesteps = _controlnet_timesteps(runner, txt2img(window))
    assert timesteps == [float(sampling.timestep(sigmas[i : i + 1])) for i in inside]  # one batched call per step

    def until(step: int, *controls) -> torch.Tensor:
        advanced = txt2img(*controls)
        advanced["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
            "add_noise": "enable", "noise_seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "dpmpp_2m",
            "scheduler": "simple", "start_at_step": 0, "end_at_step": step, "return_with_leftover_noise": "enable",
            "model": ["4", 0], "positive": advanced["3"]["inputs"]["positive"],
            "negative": advanced["3"]["inputs"]["negative"], "latent_image": ["5", 0]}}
        return latent(run_ok(runner, advanced))

    first = inside[0]
    assert torch.equal(until(first, window), until(first))  # untouched before the window
    assert not torch.equal(until(first + 1, window), until(first + 1))  # changed by its first step


def test_old_apply_also_steers_the_negative(runner):
    """ComfyUI's ControlNetApply (positive only) gives its ControlNet to a negative without one: the same image as
    Apply ControlNet on both."""
    old = latent(run_ok(runner, txt2img({"class_type": "ControlNetApply", "strength": 0.9})))
    advanced = latent(run_ok(runner, txt2img({"strength": 0.9})))
    assert torch.equal(old, advanced)


def test_two_controlnets_chain(runner, plain):
    """The same ControlNet loaded as a file and as a diffusers folder, with two hints: chained, their residuals add
    up, and the result differs from either alone."""
    folder = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny_controlnet_sd1"}}
    first = {"image": "hint.png", "strength": 0.8}
    second = {"image": "wide.png", "strength": 0.6, "control_net": ["21", 0]}

    def run(*controls):
        prompt = txt2img(*controls)
        prompt["21"] = folder
        return latent(run_ok(runner, prompt))

    both, one, two = run(first, second), run(first), run(second)
    for alone in (one, two, plain):
        assert (both - alone).abs().max() > 1e-2
    timesteps = _controlnet_timesteps(runner, {**txt2img(first, second), "21": folder}, loaders=("20", "21"))
    assert len(timesteps) == 2 * STEPS  # two ControlNet calls per step (the folder form is its own model)


def test_hint_is_resized_to_the_latent_like_comfyui(runner):
    """A 128 x 96 hint is center-cropped to the latent's aspect ratio and resized nearest-exact: the same as
    ImageScale(nearest-exact, center) to 64 x 64 before applying it."""
    direct = txt2img({"image": "wide.png"})
    scaled = txt2img({"image": "wide.png"})
    scaled["50"] = {"class_type": "ImageScale", "inputs": {
        "image": ["40", 0], "upscale_method": "nearest-exact", "width": 64, "height": 64, "crop": "center"}}
    scaled["30"]["inputs"]["image"] = ["50", 0]
    assert torch.equal(latent(run_ok(runner, direct)), latent(run_ok(runner, scaled)))


def test_controlnet_for_another_family_is_refused_clearly(runner):
    prompt = txt2img({"strength": 0.5})
    prompt["4"]["inputs"]["ckpt_name"] = "tiny_sdxl.safetensors"
    run = runner.run(prompt)
    assert run.status == "error"
    assert "cannot steer this sdxl model" in str(run.error)


def test_controlnet_loader_lists_files_and_folders(runner):
    from nodegraph.engine import default_registry

    info = default_registry().object_info(runner.folders, "ControlNetLoader")["ControlNetLoader"]
    choices = info["input"]["required"]["control_net_name"][0]
    assert {"tiny_controlnet_sd1.safetensors", "tiny_controlnet_sd1"} <= set(choices)


# ---------------------------------------------------------------------------------------------------------------
# Canny


def _square(size: int = 32, contrast: float = 1.0) -> torch.Tensor:
    image = torch.full((1, size, size, 3), 0.5 - contrast / 2)
    image[:, 8:24, 8:24] = 0.5 + contrast / 2
    return image


def test_canny_finds_the_outline_of_a_square():
    edges = canny_edges(_square(), 0.4, 0.8)
    assert edges.shape == (1, 32, 32, 3) and set(edges.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(edges[..., 0], edges[..., 1]) and torch.equal(edges[..., 0], edges[..., 2])
    mask = edges[0, :, :, 0].bool()
    ys, xs = np.nonzero(mask.numpy())
    # every edge pixel lies on the square's border (one pixel either side), and each side has edges
    assert all(min(abs(y - b) for b in (7.5, 23.5)) <= 1 or min(abs(x - b) for b in (7.5, 23.5)) <= 1
               for y, x in zip(ys, xs))
    assert mask[12:20, 6:10].any() and mask[12:20, 22:26].any() and mask[6:10, 12:20].any()
    assert not mask[12:20, 12:20].any() and not mask[:4].any()


def test_canny_thresholds_are_comfyui_gradient_units():
    """On the 0..1 image, a step of height h blurred with sigma 1 has a peak Sobel magnitude of about 3.2 h: a
    0.16 step (red on grey in the example image) passes a 0.4 threshold but not 0.8."""
    weak = _square(contrast=0.16)
    assert canny_edges(weak, 0.4, 0.8).sum() == 0
    assert canny_edges(weak, 0.2, 0.4).sum() > 0
    strong = canny_edges(_square(), 0.4, 0.8).sum()
    assert canny_edges(_square(), 0.9, 0.95).sum() <= strong <= canny_edges(_square(), 0.05, 0.1).sum()


def test_canny_node_runs_in_a_workflow(runner):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
        "2": {"class_type": "Canny", "inputs": {"image": ["1", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    run = run_ok(runner, prompt)
    edges = run.values["2"][0]
    assert edges.shape == (1, 64, 64, 3) and 0 < edges.mean() < 0.2
