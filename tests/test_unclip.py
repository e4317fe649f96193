"""SD 2.1 unCLIP: the single file (class-embedding UNet + OpenCLIP-layout image encoder), unCLIPConditioning's
ADM vector (ComfyUI's unclip_adm written out by hand here), the nodes, and parity with diffusers'
StableUnCLIPImg2ImgPipeline on the same tiny model.

Where the conventions differ, the tests say so:
* diffusers noises the image embedding with the pipeline's generator before it draws the latents; ComfyUI (and
  nodegraph) draw that noise from a generator seeded with the sampler's seed - 10. The parity run gives the pipeline
  a generator seeded with seed - 10 and the start latents explicitly, so both draw the same noise.
* diffusers takes an integer noise_level; unCLIPConditioning a fraction: level = round(999 * noise_augmentation).
* diffusers' published pipelines carry CLIP statistics in their image normaliser; ComfyUI's noise augmentor uses
  mean 0 / std 1 (the identity), so the reference pipeline here gets a default (identity) normaliser.
"""
from __future__ import annotations

import math

import pytest
import torch

from nodegraph_nodes.diffusion import unclip
from nodegraph_nodes.diffusion.conditioning import Conditioning
from nodegraph_nodes.diffusion.keymap import write_single_file
from nodegraph_nodes.diffusion.tiny_unclip import tiny_sd21_unclip

SEED = 42
NAME = "tiny_sd21_unclip.safetensors"


@pytest.fixture(scope="module")
def source():
    return tiny_sd21_unclip(0)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, source):
    root = tmp_path_factory.mktemp("models")
    write_single_file(source, root / "checkpoints" / NAME)
    from nodegraph_nodes.diffusion.tiny import tiny_sd2

    write_single_file(tiny_sd2(0), root / "checkpoints" / "tiny_sd2.safetensors")
    return root


# --- ComfyUI's formulas, written out independently of unclip.py ---------------------------------------------------


def _comfy_alphas_cumprod():
    """squaredcos_cap_v2 over 1000 steps, in float64 as ComfyUI's register_schedule (numpy) computes it."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f((i + 1) / 1000) / f(i / 1000), 0.999) for i in range(1000)]
    out, acc = [], 1.0
    for b in betas:
        acc *= 1 - b
        out.append(acc)
    return torch.tensor(out, dtype=torch.float64)


def _comfy_augment(embed, level, seed):
    abar = float(_comfy_alphas_cumprod()[level])
    sqrt_a, sqrt_1ma = torch.tensor(abar ** 0.5), torch.tensor((1 - abar) ** 0.5)  # float32 tables, as ComfyUI's
    # ComfyUI passes generator=torch.manual_seed(seed) (the default CPU generator, reseeded): the same draw as this
    noise = torch.randn(embed.shape, generator=torch.Generator().manual_seed(seed))
    half = embed.shape[-1] // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = torch.tensor([float(level)])[:, None] * freqs[None]
    return torch.cat([sqrt_a * embed + sqrt_1ma * noise, torch.cat([torch.cos(args), torch.sin(args)], -1)], 1)


def _comfy_adm(entries, seed):
    """entries: [(image_embeds [B, d], strength, noise_augmentation)] -> [1, 2d] (model_base.unclip_adm)."""
    outs = []
    for embeds, strength, aug in entries:
        for row in embeds:
            outs.append(_comfy_augment(row[None], round(999 * aug), seed - 10) * strength)
    if len(outs) == 1:
        return outs[0]
    summed = torch.stack(outs).sum(0)
    d = summed.shape[1] // 2
    return _comfy_augment(summed[:, :d], round(999 * 0.05), seed - 10)


def test_adm_is_comfyuis_formula():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(1, 16, generator=g), torch.randn(2, 16, generator=g)
    spec = lambda e, s, n: unclip.UnclipSpec(e, s, n)  # noqa: E731
    cases = [
        [(a, 1.0, 0.0)],
        [(a, 0.7, 0.25)],
        [(a, -2.0, 1.0)],
        [(a, 1.0, 0.1), (a, 0.5, 0.3)],  # two unCLIPConditioning nodes chained
        [(b, 1.0, 0.2)],  # a batch of two images in one CLIP_VISION_OUTPUT: merged like two entries
    ]
    for entries in cases:
        ours = unclip.adm(tuple(spec(*e) for e in entries), 32, SEED)
        torch.testing.assert_close(ours, _comfy_adm(entries, SEED), rtol=0, atol=2e-6)
    assert torch.equal(unclip.adm((), 32, SEED), torch.zeros(1, 32))  # no unCLIP: zeros, as ComfyUI
    # the same seed gives the same vector, another seed another (noise drawn from seed - 10)
    one = (spec(a, 1.0, 0.5),)
    assert torch.equal(unclip.adm(one, 32, 5), unclip.adm(one, 32, 5))
    assert not torch.equal(unclip.adm(one, 32, 5), unclip.adm(one, 32, 6))
    # strength scales the whole vector, the level embedding included
    torch.testing.assert_close(unclip.adm((spec(a, 2.0, 0.5),), 32, 5), 2 * unclip.adm(one, 32, 5))
    with pytest.raises(ValueError, match="unCLIPConditioning: the CLIP vision model's image embeddings are 16"):
        unclip.adm(one, 48, 5)


def test_schedule_matches_diffusers_image_noising_scheduler():
    from diffusers import DDPMScheduler

    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    torch.testing.assert_close(unclip.alphas_cumprod().float(), theirs, rtol=1e-5, atol=1e-6)


def test_single_file_round_trip(source, models_root):
    """The file holds Stability's layout (label_emb, embedder.model.visual.*, noise_augmentor.*) and loads bit for
    bit: a projection class embedding on the SD2 UNet and the embedded image encoder."""
    from safetensors import safe_open

    from nodegraph_nodes.diffusion.cache_readers import read_checkpoint
    from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file as load_checkpoint
    from support.models import assert_same_weights

    path = models_root / "checkpoints" / NAME
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert "embedder.model.visual.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "embedder.model.visual.proj" in keys and "noise_augmentor.alphas_cumprod" in keys
    loaded = load_checkpoint(path)
    assert loaded.family == "sd2" and loaded.unet.config.class_embed_type == "projection"
    assert_same_weights(loaded.unet, source.unet)
    parts = read_checkpoint(str(path))  # what the model cache holds: the image encoder beside MODEL, CLIP and VAE
    assert parts["info"]["clip_vision"] and parts["info"]["family"] == "sd2"
    assert_same_weights(parts["clip_vision"], source.clip_vision)


def test_real_layout_is_recognised_from_shapes():
    """A released unCLIP-H file (shapes only): the SD2 family, the UNet config gains the 2048-wide projection
    class embedding, and the OpenCLIP ViT-H/14 tower converts to transformers' names with its config read off."""
    from nodegraph_nodes.diffusion.clip_vision import config_from_shapes
    from nodegraph_nodes.diffusion.families import FAMILIES, detect_family
    from support.models import real_layout_shapes

    shapes = real_layout_shapes("sd2_base")
    shapes[unclip.LABEL_EMB_KEY] = (1280, 2048)
    shapes["embedder.model.visual.proj"] = (1280, 1024)
    assert detect_family(shapes).name == "sd2_base"  # v-prediction is told from the values, not at hand here
    config = unclip.unet_config_for(FAMILIES["sd2"].config("unet"), shapes)
    assert config["class_embed_type"] == "projection" and config["projection_class_embeddings_input_dim"] == 2048
    assert "class_embed_type" not in unclip.unet_config_for(FAMILIES["sd2"].config("unet"), real_layout_shapes("sd2"))

    width, layers = 1280, 32
    visual = {"conv1.weight": (width, 3, 14, 14), "class_embedding": (width,), "positional_embedding": (257, width),
              "ln_pre.weight": (width,), "ln_pre.bias": (width,), "ln_post.weight": (width,),
              "ln_post.bias": (width,), "proj": (width, 1024)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        visual.update({p + "ln_1.weight": (width,), p + "attn.in_proj_weight": (3 * width, width),
                       p + "attn.in_proj_bias": (3 * width,), p + "attn.out_proj.weight": (width, width),
                       p + "mlp.c_fc.weight": (5120, width), p + "mlp.c_proj.weight": (width, 5120)})
    converted = unclip.open_clip_visual_to_transformers({k: torch.zeros(1).expand(*s) for k, s in visual.items()})
    assert converted["vision_model.encoder.layers.3.self_attn.k_proj.weight"].shape == (width, width)
    assert converted["visual_projection.weight"].shape == (1024, width)
    config = config_from_shapes(converted)
    assert (config["hidden_size"], config["num_hidden_layers"], config["image_size"], config["projection_dim"],
            config["hidden_act"]) == (1280, 32, 224, 1024, "gelu")


def test_parity_with_stable_unclip_img2img_pipeline(source):
    """Our sampler with an unCLIPConditioning vs StableUnCLIPImg2ImgPipeline (same UNet, text encoder, image
    embeddings; DPM-Solver++ 2M with trailing spacing = our dpmpp_2m + simple), noise level 100 (0.1 here)."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor

    from nodegraph_nodes.diffusion.clip_vision import encode_image
    from nodegraph_nodes.diffusion.families import bundled_config
    from nodegraph_nodes.diffusion.sampling_run import ksample, ksampler_sigmas, prepare_noise
    from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling

    steps, cfg, aug = 8, 6.0, 0.1
    width = source.clip_vision.config.projection_dim
    scheduler = DPMSolverMultistepScheduler.from_config(bundled_config("sd21_v", "scheduler"),
                                                        timestep_spacing="trailing")
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(), image_encoder=source.clip_vision,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=width),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        tokenizer=source.tokenizers[0], text_encoder=source.text_encoders[0], unet=source.unet,
        scheduler=scheduler, vae=source.vae,
    )
    pipe.set_progress_bar_config(disable=True)
    positive, negative = pipe.encode_prompt("a red circle", "cpu", 1, True, "blurry")
    image = torch.rand(1, 48, 40, 3, generator=torch.Generator().manual_seed(1))
    embeds = encode_image(source.clip_vision, image, crop=True).image_embeds

    ms = DiscreteModelSampling(pipe.scheduler.alphas_cumprod, "v_prediction")
    latent = torch.zeros(1, 4, 8, 8)
    sigmas = ksampler_sigmas(ms, "simple", "dpmpp_2m", steps)
    pos = Conditioning(positive, unclip=(unclip.UnclipSpec(embeds, 1.0, aug),))
    ours = ksample(source.unet, ms, pos, Conditioning(negative), latent, seed=SEED, steps=steps, cfg=cfg,
                   sampler_name="dpmpp_2m", scheduler="simple")
    start = ms.noise_scaling(float(sigmas[0]), prepare_noise(latent, SEED), latent)
    theirs = pipe(
        image_embeds=embeds, prompt_embeds=positive, negative_prompt_embeds=negative, num_inference_steps=steps,
        guidance_scale=cfg, noise_level=round(999 * aug), output_type="latent", height=64, width=64,
        latents=start / (1 + float(sigmas[0]) ** 2) ** 0.5, generator=torch.Generator().manual_seed(SEED - 10),
    ).images
    diff = (ours - theirs).abs().max().item()
    print(f"unCLIP parity: max |latent diff| = {diff:.2e}")
    assert diff <= 1e-4, diff
    # the image conditioning matters: without it the result is another latent
    plain = ksample(source.unet, ms, Conditioning(positive), Conditioning(negative), latent, seed=SEED, steps=steps,
                    cfg=cfg, sampler_name="dpmpp_2m", scheduler="simple")
    assert (plain - ours).abs().max() > 100 * max(diff, 1e-6)


def _workflow(strength=1.0, aug=0.0, loader="unCLIPCheckpointLoader", ckpt=NAME):
    outputs = {"unCLIPCheckpointLoader": (0, 1, 2, 3), "ImageOnlyCheckpointLoader": (0, None, 2, 1)}[loader]
    model, clip, vae, vision = outputs
    prompt = {
        "1": {"class_type": loader, "inputs": {"ckpt_name": ckpt}},
        "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 48, "batch_size": 1, "color": 0xff8020}},
        "3": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["1", vision], "image": ["2", 0],
                                                          "crop": "center"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle",
                                                        "clip": ["1", clip] if clip is not None else ["10", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "",
                                                        "clip": ["1", clip] if clip is not None else ["10", 1]}},
        "6": {"class_type": "unCLIPConditioning", "inputs": {"conditioning": ["4", 0], "clip_vision_output": ["3", 0],
                                                            "strength": strength, "noise_augmentation": aug}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {
            "seed": 3, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["1", model], "positive": ["6", 0], "negative": ["5", 0], "latent_image": ["7", 0]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", vae]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
    }
    return prompt


def test_nodes_end_to_end(models_root, tmp_path):
    """unCLIPCheckpointLoader -> CLIPVisionEncode -> unCLIPConditioning -> KSampler: the image conditioning changes
    the result; strength 0 returns the conditioning unchanged (as ComfyUI), so equals the plain prompt; the loader's
    CLIP_VISION is the checkpoint's encoder; ImageOnlyCheckpointLoader gives the same model, encoder and VAE."""
    from support.sd import Runner, make_folders

    runner = Runner(make_folders(tmp_path, models_root))
    on = runner.run(_workflow()).values
    off = runner.run(_workflow(strength=0.0)).values
    plain_prompt = _workflow()
    plain_prompt["8"]["inputs"]["positive"] = ["4", 0]
    plain = runner.run(plain_prompt).values
    assert on["6"][0].unclip and not off["6"][0].unclip
    assert torch.equal(off["8"][0]["samples"], plain["8"][0]["samples"])
    assert (on["8"][0]["samples"] - plain["8"][0]["samples"]).abs().max() > 1e-3
    noisy = runner.run(_workflow(aug=0.5)).values
    assert not torch.equal(noisy["8"][0]["samples"], on["8"][0]["samples"])
    only = runner.run(_workflow(loader="ImageOnlyCheckpointLoader")).values
    assert torch.equal(only["8"][0]["samples"], on["8"][0]["samples"])
    assert torch.equal(only["3"][0].image_embeds, on["3"][0].image_embeds)


def test_unclip_loader_refuses_a_checkpoint_without_clip_vision(models_root, tmp_path):
    from support.sd import Runner, make_folders

    runner = Runner(make_folders(tmp_path, models_root))
    events: list = []
    runner.run(_workflow(ckpt="tiny_sd2.safetensors"), events=events)
    errors = [d for e, d in events if e == "execution_error"]
    assert errors and errors[0]["node_type"] == "unCLIPCheckpointLoader"
    assert "holds no CLIP vision model" in errors[0]["exception_message"]


def test_declarations():
    from nodegraph.engine import default_registry

    registry = default_registry()
    loader = registry.get("unCLIPCheckpointLoader").object_info()
    assert list(loader["input"]["required"]) == ["ckpt_name"]
    assert loader["output"] == ["MODEL", "CLIP", "VAE", "CLIP_VISION"] and loader["category"] == "loaders"
    assert loader["output_name"] == ["MODEL", "CLIP", "VAE", "CLIP_VISION"]
    only = registry.get("ImageOnlyCheckpointLoader").object_info()
    assert only["output"] == ["MODEL", "CLIP_VISION", "VAE"] and only["category"] == "loaders/video_models"
    cond = registry.get("unCLIPConditioning").object_info()
    required = cond["input"]["required"]
    assert list(required) == ["conditioning", "clip_vision_output", "strength", "noise_augmentation"]
    assert required["strength"] == ["FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}]
    assert required["noise_augmentation"] == ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}]
    assert cond["output"] == ["CONDITIONING"] and cond["category"] == "conditioning"


def test_sdxl_revision_replaces_the_pooled_embedding():
    """unCLIPConditioning on an SDXL model (ComfyUI's sdxl_pooled): the pooled text embedding becomes the noised
    image embedding (the ADM vector's first half; several images merged at noise augmentation 0, not 0.05); the
    cross-attention tokens stay; without unCLIP the pooled embedding is the text's."""
    from nodegraph_nodes.diffusion.denoiser import CFGDenoiser
    from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
    from nodegraph_nodes.diffusion.tiny import tiny_sdxl
    from diffusers import DDPMScheduler

    unet = tiny_sdxl(0).unet
    ms = DiscreteModelSampling(DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                             beta_end=0.012).alphas_cumprod, "epsilon")
    g = torch.Generator().manual_seed(4)
    text_pooled, image = torch.randn(1, 48, generator=g), torch.randn(2, 48, generator=g)
    plain = Conditioning(torch.randn(1, 77, 80, generator=g), pooled=text_pooled)
    with_image = Conditioning(plain.embeds, pooled=text_pooled, unclip=(unclip.UnclipSpec(image, 0.8, 0.3),))
    with unclip.sampling_seed(SEED):
        denoiser = CFGDenoiser(unet, ms, with_image, plain, 5.0)
    negative_half, positive_half = denoiser._halves
    assert torch.equal(negative_half.pooled, text_pooled)
    summed = _comfy_augment(image[:1], round(999 * 0.3), SEED - 10) * 0.8 + \
        _comfy_augment(image[1:], round(999 * 0.3), SEED - 10) * 0.8
    expected = _comfy_augment(summed[:, :48], 0, SEED - 10)[:, :48]
    torch.testing.assert_close(positive_half.pooled, expected, rtol=0, atol=2e-6)
    assert positive_half.class_labels is None  # SDXL UNets have no class embedding
