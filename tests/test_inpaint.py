"""Inpainting: the LATENT noise mask in every sampler node, inpainting (9-channel) checkpoints, the inpaint nodes.

References are independent of our sampler: ComfyUI's KSamplerX0Inpaint formula written out around k-diffusion's own
samplers, and diffusers' StableDiffusionInpaintPipeline for a 9-channel UNet.
"""
from __future__ import annotations

import copy

import pytest
import torch

from nodegraph_nodes.diffusion.conditioning import Conditioning
from nodegraph_nodes.diffusion.denoiser import CFGDenoiser
from nodegraph_nodes.diffusion.families import FAMILIES, UNET_IN_KEY, detect_family, detect_folder_family
from nodegraph_nodes.diffusion.inpaint import latent_mask
from nodegraph_nodes.diffusion.sampling_run import ksampler_sigmas, prepare_noise, sample_with_sigmas
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from support.tiny import encoded_sd1
from support.sd import Runner, make_folders

from test_samplers_reference import K_MISSING
from test_samplers_reference import K as k_sampling

needs_k = pytest.mark.skipif(k_sampling is None, reason=K_MISSING or "")

SEED, STEPS, CFG = 7, 6, 6.0


@pytest.fixture(scope="module")
def sd1():
    return encoded_sd1()


def _mask() -> torch.Tensor:
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 8:40] = 1.0
    return mask


def _latent() -> torch.Tensor:
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))


def _comfy_reference(sd1, sampler, latent, mask, sigmas, noise):
    """ComfyUI's KSamplerX0Inpaint around k-diffusion's sampler, written out from its formula."""
    pipe, positive, negative, ms = sd1
    inner = CFGDenoiser(pipe.unet, ms, positive, negative, CFG)
    m = torch.nn.functional.interpolate(mask.reshape(-1, 1, 64, 64), size=(8, 8), mode="bilinear").expand(1, 4, 8, 8)

    def model(x, sigma, **_):
        x = x * m + (latent + noise * sigma.reshape(-1, 1, 1, 1)) * (1 - m)
        return inner(x, sigma) * m + latent * (1 - m)

    sigma0 = float(sigmas[0])
    start = latent + noise * ((1 + sigma0**2) ** 0.5 if abs(sigma0 - ms.sigma_max) < 1e-4 else sigma0)
    with torch.inference_mode():
        return getattr(k_sampling, f"sample_{sampler}")(model, start, sigmas, disable=True)


@needs_k
@pytest.mark.parametrize(("sampler", "denoise"), [("euler", 1.0), ("dpmpp_2m", 1.0), ("heun", 0.6)])
def test_noise_mask_matches_comfyui_formula_on_k_diffusion(sd1, sampler, denoise):
    pipe, positive, negative, ms = sd1
    latent, mask = _latent(), _mask()
    sigmas = ksampler_sigmas(ms, "karras", sampler, STEPS, denoise)
    ours = sample_with_sigmas(pipe.unet, ms, positive, negative, latent, sigmas, seed=SEED, cfg=CFG,
                              sampler_name=sampler, noise_mask=mask)
    reference = _comfy_reference(sd1, sampler, latent, mask, sigmas, prepare_noise(latent, SEED))
    assert (ours - reference).abs().max() <= 1e-4
    # the kept area is the original latent (the last step lands on the blended prediction), the masked area is new
    keep = latent_mask(1 - mask, latent.shape).bool()
    assert (ours - latent)[keep].abs().max() <= 1e-5
    assert (ours - latent)[~keep].abs().mean() > 0.1


def test_noise_mask_with_leftover_noise_keeps_the_noised_original(sd1):
    """KSamplerAdvanced return_with_leftover_noise: the kept area ends at latent + noise * last sigma.

    Below the top of the schedule (denoise < 1) the start is latent + noise * sigma0 and Euler stays on that line in
    the kept area. (From the top, ComfyUI starts at noise * sqrt(1 + sigma0^2) and the sampler's own x is not reset
    by the blend, so the first step lands off it by that factor: the k-diffusion parity test covers that case.)"""
    pipe, positive, negative, ms = sd1
    latent, mask = _latent(), _mask()
    sigmas = ksampler_sigmas(ms, "normal", "euler", STEPS, denoise=0.8)[:4]  # stop at step 3, sigma > 0
    ours = sample_with_sigmas(pipe.unet, ms, positive, negative, latent, sigmas, seed=SEED, cfg=CFG,
                              sampler_name="euler", noise_mask=mask)
    keep = latent_mask(1 - mask, latent.shape).bool()
    expected = latent + prepare_noise(latent, SEED) * float(sigmas[-1])
    assert (ours - expected)[keep].abs().max() <= 1e-4


def test_differential_diffusion_mask_is_binary_per_step(sd1):
    """A soft mask through DifferentialDiffusion: each evaluation sees mask >= (remaining timestep share)."""
    from nodegraph_nodes.diffusion.inpaint import differential_mask_function

    _, _, _, ms = sd1
    sigmas = ksampler_sigmas(ms, "normal", "euler", 4)
    fn = differential_mask_function(ms, sigmas, 1.0)
    soft = torch.linspace(0, 1, 11).reshape(1, 1, 1, 11)
    first = fn(sigmas[:1], soft)
    last = fn(sigmas[-2:-1], soft)
    assert torch.equal(first, (soft >= 1.0).float())  # at the top only mask 1 is repainted
    assert set(last.unique().tolist()) <= {0.0, 1.0} and last.sum() > first.sum()
    half = differential_mask_function(ms, sigmas, 0.5)(sigmas[:1], soft)
    assert torch.allclose(half, 0.5 * first + 0.5 * soft)


# --- through the nodes: every sampler node keeps the unmasked area ------------------------------------------------


def _masked_workflow(sampler_node: dict) -> dict:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "20": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}},
        "21": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 24}},
        "22": {"class_type": "MaskComposite", "inputs": {"destination": ["20", 0], "source": ["21", 0], "x": 16,
                                                         "y": 8, "operation": "add"}},
        "23": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        # a non-empty starting latent: a short txt2img run
        "24": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["23", 0]}},
        "25": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["24", 0], "mask": ["22", 0]}},
        "3": sampler_node,
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    return prompt


SAMPLER_NODES = {
    "KSampler": {"class_type": "KSampler", "inputs": {
        "seed": 5, "steps": 4, "cfg": 6.0, "sampler_name": "euler_ancestral", "scheduler": "karras", "denoise": 1.0,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["25", 0]}},
    "KSamplerAdvanced": {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 5, "steps": 6, "cfg": 6.0, "sampler_name": "dpmpp_2m",
        "scheduler": "normal", "start_at_step": 2, "end_at_step": 10000, "return_with_leftover_noise": "disable",
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["25", 0]}},
    "SamplerCustom": {"class_type": "SamplerCustom", "inputs": {
        "add_noise": True, "noise_seed": 5, "cfg": 6.0, "model": ["4", 0], "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["31", 0], "sigmas": ["30", 0], "latent_image": ["25", 0]}},
    "KSampler ddim": {"class_type": "KSampler", "inputs": {
        "seed": 5, "steps": 4, "cfg": 6.0, "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 0.8,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["25", 0]}},
}


@pytest.mark.parametrize("node", list(SAMPLER_NODES))
def test_every_sampler_node_keeps_the_unmasked_latent(models_root, tmp_path, node):
    prompt = _masked_workflow(copy.deepcopy(SAMPLER_NODES[node]))
    if node == "SamplerCustom":
        prompt["30"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "simple",
                                                                     "steps": 5, "denoise": 1.0}}
        prompt["31"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    values = Runner(make_folders(tmp_path, models_root)).run(prompt).values
    before, after = values["24"][0]["samples"], values["3"][0]["samples"]
    assert "noise_mask" in values["3"][0]  # the mask travels on with the latent, as in ComfyUI
    keep = torch.ones(1, 4, 8, 8, dtype=torch.bool)
    keep[:, :, 1:4, 2:6] = False  # the 32x24 pixel box at (16, 8)
    assert (after - before)[keep].abs().max() <= 1e-5
    assert (after - before)[~keep].abs().mean() > 0.05


# --- inpainting checkpoints -----------------------------------------------------------------------------------------


def test_inpainting_checkpoints_are_recognised_by_their_input_channels():
    def shapes(channels):
        return {
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
            UNET_IN_KEY: (320, channels, 3, 3),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
        }

    assert detect_family(shapes(9)) is FAMILIES["sd1"]
    assert detect_family(shapes(4)) is FAMILIES["sd1"]
    assert detect_family(shapes(5)) is None
    xl = {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        UNET_IN_KEY: (320, 9, 3, 3),
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
        "conditioner.embedders.1.model.token_embedding.weight": (49408, 1280),
    }
    assert detect_family(xl) is FAMILIES["sdxl"]
    assert detect_folder_family({"model_index": {"_class_name": "StableDiffusionInpaintPipeline"},
                                 "unet": {"cross_attention_dim": 768}}) is FAMILIES["sd1"]
    assert detect_folder_family({"model_index": {"_class_name": "StableDiffusionXLInpaintPipeline"}}) is FAMILIES["sdxl"]


def test_tiny_inpainting_checkpoint_loads_from_file_and_folder_alike(models_root):
    single = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1_inpaint.safetensors")
    folder = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1_inpaint")
    assert single.family == folder.family == "sd1"
    assert single.unet.config.in_channels == folder.unet.config.in_channels == 9
    for (name, a), b in zip(single.unet.state_dict().items(), folder.unet.state_dict().values()):
        assert torch.equal(a, b), name


def test_inpaint_model_conditioning_node(models_root, tmp_path):
    """The node's outputs: the latent of the image, the latent of the image greyed out under the mask (the VAE's
    mean, as ComfyUI), the mask on both conditionings and, with noise_mask, on the latent."""
    from PIL import Image

    folders = make_folders(tmp_path, models_root)
    folders.input_dir.mkdir(parents=True)
    pixels = (torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(folders.input_dir / "photo.png")
    Image.fromarray((_mask()[0].numpy() * 255).astype("uint8")).save(folders.input_dir / "mask.png")
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1_inpaint.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["4", 1]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "11": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "12": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["6", 0], "negative": ["6", 0], "vae": ["4", 2], "pixels": ["10", 0], "mask": ["11", 0],
            "noise_mask": True}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0, "model": ["4", 0], "positive": ["12", 0], "negative": ["12", 1],
            "latent_image": ["12", 2]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    values = Runner(folders).run(prompt).values
    positive, negative, latent = values["12"]
    vae = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1_inpaint.safetensors").vae
    image = pixels.float()[None].movedim(-1, 1) / 255.0 * 2 - 1
    with torch.no_grad():
        assert torch.allclose(latent["samples"], vae.encode(image).latent_dist.mean, atol=1e-5)
        greyed = image * (_mask()[:, None] < 0.5)
        assert torch.allclose(positive.concat_latent, vae.encode(greyed).latent_dist.mean, atol=1e-5)
    assert positive.concat_latent is negative.concat_latent
    assert torch.equal(positive.concat_mask, _mask()[:, None]) and torch.equal(latent["noise_mask"], _mask()[:, None])
    # sampled with the noise mask: the kept area is the image's latent
    keep = latent_mask(1 - _mask(), (1, 4, 8, 8)).bool()
    assert (values["3"][0]["samples"] - latent["samples"])[keep].abs().max() <= 1e-5


def test_inpainting_unet_equals_stable_diffusion_inpaint_pipeline(models_root):
    """A 9-channel UNet sampled with the mask and masked-image latent as InpaintModelConditioning gives them (noise
    mask off) against diffusers' StableDiffusionInpaintPipeline. Where they differ and how the test aligns them:
    - diffusers encodes the masked image by sampling the VAE's latent distribution, ComfyUI takes its mean: the
      pipeline is given `masked_image_latents` encoded with the mean, by diffusers' own VAE;
    - diffusers never blends a 9-channel model's latent with the original (ComfyUI does when noise_mask is on), so
      the noise mask is off here;
    - the start: ours runs from the pipeline's own starting tensor (noise * init_noise_sigma, add_noise off), since
      the untrained UNet amplifies a 1-ulp difference in the start (see test_ksampler_parity)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline

    c = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1_inpaint")
    scale = FAMILIES["sd1"].latent_scale
    steps, seed, cfg = 5, 11, 5.0
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = _mask()[:, None]
    with torch.no_grad():
        masked = (image * 2 - 1) * (mask < 0.5)
        masked_latents = c.vae.encode(masked).latent_dist.mean * scale
    pipe = StableDiffusionInpaintPipeline(
        vae=c.vae, text_encoder=c.text_encoders[0], tokenizer=c.tokenizers[0], unet=c.unet,
        scheduler=EulerDiscreteScheduler.from_config(c.scheduler_config, timestep_spacing="trailing"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    noise = prepare_noise(torch.zeros(1, 4, 8, 8), seed)
    theirs = pipe(
        "a red square", negative_prompt="blurry", image=image, mask_image=mask, masked_image_latents=masked_latents,
        num_inference_steps=steps, guidance_scale=cfg, height=64, width=64, latents=noise, strength=1.0,
        output_type="latent",
    ).images

    positive, negative = pipe.encode_prompt("a red square", "cpu", 1, True, "blurry")
    ms = DiscreteModelSampling.from_config(c.scheduler_config)
    sigmas = ksampler_sigmas(ms, "simple", "euler", steps)
    start = noise * pipe.scheduler.init_noise_sigma
    assert abs(float(sigmas[0]) - float(pipe.scheduler.sigmas[0])) <= 1e-5 * float(sigmas[0])
    inpaint = {"concat_latent": masked_latents, "concat_mask": mask}
    ours = sample_with_sigmas(
        c.unet, ms, Conditioning(positive, **inpaint), Conditioning(negative, **inpaint), start, sigmas,
        seed=seed, cfg=cfg, sampler_name="euler", add_noise=False,
    )
    assert (ours - theirs).abs().max() <= 1e-4


def test_sdxl_inpainting_unet_samples_with_the_mask_channels():
    """An SDXL-shaped 9-channel UNet: the extra channels and the size conditioning go in together; the kept area
    stays. (No diffusers reference here: the 9-channel path is compared with diffusers on SD1 above.)"""
    from nodegraph_nodes.diffusion.tiny import TINY_SDXL_UNET, build_unet

    unet = build_unet({**TINY_SDXL_UNET, "in_channels": 9}, 3)
    ms = DiscreteModelSampling.from_config(FAMILIES["sdxl"].config("scheduler"))
    width, pooled = TINY_SDXL_UNET["cross_attention_dim"], TINY_SDXL_UNET["projection_class_embeddings_input_dim"]
    g = torch.Generator().manual_seed(0)
    mask = _mask()[:, None]
    cond = lambda: Conditioning(torch.randn(1, 77, width, generator=g), pooled=torch.randn(1, pooled - 48, generator=g),  # noqa: E731
                                concat_latent=torch.randn(1, 4, 8, 8, generator=g), concat_mask=mask)
    latent = _latent()
    sigmas = ksampler_sigmas(ms, "normal", "euler", 3)
    out = sample_with_sigmas(unet, ms, cond(), cond(), latent, sigmas, seed=1, cfg=5.0, sampler_name="euler",
                             noise_mask=mask[:, 0])
    keep = latent_mask(1 - mask, latent.shape).bool()
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert (out - latent)[keep].abs().max() <= 1e-5
