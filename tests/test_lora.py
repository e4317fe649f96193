"""LoRA: the nodes as ComfyUI declares them, every published layout, patches on the cached base (stacking, strength
0, the base untouched afterwards, one copy in memory), cache keys, and parity with diffusers' own LoRA loading."""
import copy
import os
import time

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
from safetensors.torch import save_file

from nodegraph.engine import Folders, Runtime, default_registry
from nodegraph_nodes.diffusion.families import FAMILIES
from nodegraph_nodes.diffusion.sampling_run import ksampler_sigmas, prepare_noise
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file
from nodegraph_nodes.diffusion.lora import Adapter, LoraError, match, parse_lora, read_lora_file
from nodegraph_nodes.diffusion.cache_readers import model_cache
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from nodegraph_nodes.diffusion.patching import apply, restore
from support.workflows import txt2img

KOHYA = "tiny_lora_sd1_kohya.safetensors"
DIFFUSERS = "tiny_lora_sd1_diffusers.safetensors"


def with_lora(prompt, name=KOHYA, strength_model=1.0, strength_clip=1.0, node="10", model=("4", 0), clip=("4", 1)):
    """`prompt` with a LoraLoader between the checkpoint and its users."""
    prompt = copy.deepcopy(prompt)
    prompt[node] = {"class_type": "LoraLoader", "inputs": {
        "model": list(model), "clip": list(clip), "lora_name": name,
        "strength_model": strength_model, "strength_clip": strength_clip}}
    for nid, spec in prompt.items():
        if nid == node:
            continue
        for key, value in spec["inputs"].items():
            if value == list(model):
                spec["inputs"][key] = [node, 0]
            elif value == list(clip):
                spec["inputs"][key] = [node, 1]
    return prompt


def latent(runner, prompt):
    return runner.run(prompt).values["3"][0]["samples"]


def test_nodes_are_declared_as_in_comfyui():
    info = default_registry().object_info(None)
    lora = info["LoraLoader"]
    assert lora["input_order"]["required"] == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    assert lora["output"] == ["MODEL", "CLIP"] and lora["display_name"] == "Load LoRA"
    assert lora["category"] == "loaders"
    assert lora["input"]["required"]["strength_model"][1] | {"tooltip": None} == {
        "default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip": None}
    assert lora["output_tooltips"] == ["The modified diffusion model.", "The modified CLIP model."]
    only = info["LoraLoaderModelOnly"]
    assert only["input_order"]["required"] == ["model", "lora_name", "strength_model"]
    assert only["output"] == ["MODEL"] and only["category"] == "loaders"


def test_every_layout_finds_the_same_layers(models_root):
    components = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1.safetensors")
    models = {"unet": components.unet, "l": components.text_encoders[0]}
    found = {}
    for name in (KOHYA, DIFFUSERS, "tiny_lora_sd1_kohya.pt"):
        targets, unmatched = match(read_lora_file(models_root / "loras" / name), models)
        assert not unmatched
        found[name] = {(t.component, t.path): t.adapter.delta(models[t.component].get_submodule(t.path).weight.shape)
                       for t in targets}
    assert set(found[KOHYA]) == set(found[DIFFUSERS]) == set(found["tiny_lora_sd1_kohya.pt"])
    assert any(".resnets." in path and "conv" in path for _, path in found[KOHYA])  # LoCon
    assert {c for c, _ in found[KOHYA]} == {"unet", "l"}
    for key, delta in found[KOHYA].items():
        assert torch.equal(delta, found["tiny_lora_sd1_kohya.pt"][key])
        # the kohya file has alpha = rank / 2; the diffusers file has no alpha (scale 1), same up/down
        assert torch.allclose(delta * 2, found[DIFFUSERS][key], atol=1e-6)


def test_sdxl_kohya_layout_with_original_unet_names(models_root):
    components = read_checkpoint_file(models_root / "checkpoints" / "tiny_sdxl.safetensors")
    lora = read_lora_file(models_root / "loras" / "tiny_lora_sdxl_kohya.safetensors")
    assert any(name.startswith("lora_unet_input_blocks_") for name in lora.adapters)
    models = {"unet": components.unet, "l": components.text_encoders[0], "g": components.text_encoders[1]}
    targets, unmatched = match(lora, models)
    assert not unmatched
    assert {t.component for t in targets} == {"unet", "l", "g"}


def test_delta_formulas_against_the_layers_they_describe():
    torch.manual_seed(0)
    # LoRA on a Linear: strength * alpha / rank * up @ down
    down, up = torch.randn(4, 6), torch.randn(5, 4)
    lora = Adapter("x", {"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(2.0)})
    assert torch.allclose(lora.delta(torch.Size([5, 6])), 0.5 * up @ down)
    # LoCon with a Tucker core: the three convolutions in a row equal one convolution by the delta
    conv_down, mid, conv_up = torch.nn.Conv2d(3, 2, 1, bias=False), torch.nn.Conv2d(2, 2, 3, padding=1, bias=False), \
        torch.nn.Conv2d(2, 7, 1, bias=False)
    locon = Adapter("c", {"lora_down.weight": conv_down.weight, "lora_mid.weight": mid.weight,
                          "lora_up.weight": conv_up.weight})
    x = torch.randn(1, 3, 6, 6)
    delta = locon.delta(torch.Size([7, 3, 3, 3]))
    assert torch.allclose(torch.nn.functional.conv2d(x, delta, padding=1), conv_up(mid(conv_down(x))), atol=1e-5)
    # LoHa: elementwise product of two low-rank products; LoKr: Kronecker product
    a1, b1, a2, b2 = torch.randn(5, 2), torch.randn(2, 6), torch.randn(5, 2), torch.randn(2, 6)
    loha = Adapter("h", {"hada_w1_a": a1, "hada_w1_b": b1, "hada_w2_a": a2, "hada_w2_b": b2, "alpha": torch.tensor(1.0)})
    assert torch.allclose(loha.delta(torch.Size([5, 6])), 0.5 * (a1 @ b1) * (a2 @ b2))
    w1, w2a, w2b = torch.randn(2, 3), torch.randn(4, 1), torch.randn(1, 2)
    lokr = Adapter("k", {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": torch.tensor(3.0)})
    expected = torch.stack([torch.cat([w1[i, j] * (w2a @ w2b) for j in range(3)], 1) for i in range(2)]).reshape(8, 6)
    assert torch.allclose(lokr.delta(torch.Size([8, 6])), 3.0 * expected)


def test_bad_lora_files_say_what_is_wrong(tmp_path):
    with pytest.raises(LoraError, match="no LoRA weights"):
        parse_lora({"model.weight": torch.zeros(2)}, "x.safetensors")
    # DoRA files are read (tests/test_dora.py applies them)
    dora = parse_lora({"lora_unet_a.lora_down.weight": torch.zeros(1, 2), "lora_unet_a.lora_up.weight": torch.zeros(2, 1),
                       "lora_unet_a.dora_scale": torch.zeros(2, 1)}, "d.safetensors")
    assert dora.adapters["lora_unet_a"].decomposes


def test_lora_for_another_family_is_a_clear_node_error(runner, models_root):
    """A LoRA none of whose layers exist in the model (here a Flux-style one) fails in the loader, named."""
    path = models_root / "loras" / "flux_style.safetensors"
    save_file({"lora_unet_single_blocks_0_linear1.lora_down.weight": torch.zeros(4, 3072),
               "lora_unet_single_blocks_0_linear1.lora_up.weight": torch.zeros(21504, 4)}, str(path))
    prompt = with_lora(txt2img(), name="flux_style.safetensors")
    result = runner.validate(prompt)
    assert result.ok
    import asyncio
    out = asyncio.run(runner.run_async(result, "t"))
    path.unlink()
    assert out.error is not None and out.error["node_id"] == "10"
    assert "none of its 1 layers fit this sd1 model" in str(out.error["exception_message"])


def test_lora_changes_the_image_and_strength_zero_is_the_base_exactly(runner):
    base = latent(runner, txt2img())
    assert torch.equal(latent(runner, with_lora(txt2img(), strength_model=0.0, strength_clip=0.0)), base)
    assert torch.equal(latent(runner, with_lora(txt2img(), strength_model=0.0, strength_clip=0.0, name=DIFFUSERS)), base)
    on = latent(runner, with_lora(txt2img()))
    assert (on - base).abs().max() > 1e-2
    clip_only = latent(runner, with_lora(txt2img(), strength_model=0.0))
    model_only = latent(runner, with_lora(txt2img(), strength_clip=0.0))
    assert not torch.equal(clip_only, base) and not torch.equal(model_only, base)
    model_only_node = copy.deepcopy(txt2img())
    model_only_node["10"] = {"class_type": "LoraLoaderModelOnly",
                             "inputs": {"model": ["4", 0], "lora_name": KOHYA, "strength_model": 1.0}}
    model_only_node["3"]["inputs"]["model"] = ["10", 0]
    assert torch.equal(latent(runner, model_only_node), model_only)


def test_the_cached_base_is_untouched_and_held_once(runner, models_root):
    cache = model_cache(runner.executor.runtime)
    latent(runner, txt2img())
    unet_ref = next(e for e in cache._entries.values() if e.ref.component == "unet")
    before = {k: v.clone() for k, v in unet_ref.value.state_dict().items()}
    clip = next(e for e in cache._entries.values() if e.ref.component == "clip").value["models"]["l"]
    clip_before = {k: v.clone() for k, v in clip.state_dict().items()}
    latent(runner, with_lora(txt2img()))
    latent(runner, with_lora(txt2img(**{"3.seed": 7}), name=DIFFUSERS, strength_model=0.7))
    after = unet_ref.value.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(clip_before[k], v) for k, v in clip.state_dict().items())
    # one UNet (and one CLIP) in the model cache, whatever LoRAs the prompts used
    loaded = cache.stats()["loaded"]
    assert sum(e["component"] == "unet" for e in loaded) == 1
    assert sum(e["component"] == "clip" for e in loaded) == 1
    assert torch.equal(latent(runner, txt2img()), runner.run(txt2img()).values["3"][0]["samples"])


def test_two_loras_stack(runner, models_root):
    """A LoRA applied twice at 0.5 equals it once at 1.0; kohya (alpha = rank / 2) at 1.0 equals diffusers at 0.5."""
    twice = with_lora(with_lora(txt2img(), strength_model=0.5, strength_clip=0.5),
                      strength_model=0.5, strength_clip=0.5, node="11", model=("10", 0), clip=("10", 1))
    once = latent(runner, with_lora(txt2img()))
    assert (latent(runner, twice) - once).abs().max() < 1e-4
    half = latent(runner, with_lora(txt2img(), name=DIFFUSERS, strength_model=0.5, strength_clip=0.5))
    assert (half - once).abs().max() < 1e-4


def test_cache_key_has_the_file_and_the_strengths(runner, models_root, tmp_path):
    prompt = with_lora(txt2img(), name="mine.safetensors")
    path = models_root / "loras" / "mine.safetensors"
    save_file(parse_state(models_root / "loras" / KOHYA), str(path))
    first = runner.run(prompt)
    assert {"4", "10", "6", "3"} <= set(runner.run(prompt).cached)  # all from the cache
    changed = runner.run(with_lora(txt2img(), name="mine.safetensors", strength_model=0.9))
    assert "10" not in changed.cached and "3" not in changed.cached
    state = parse_state(models_root / "loras" / KOHYA)
    save_file({k: v * 2 if "lora_up" in k else v for k, v in state.items()}, str(path))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    again = runner.run(prompt)
    assert "10" not in again.cached
    assert not torch.equal(again.values["3"][0]["samples"], first.values["3"][0]["samples"])
    path.unlink()


def parse_state(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_patching_restores_bit_for_bit(models_root):
    components = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1.safetensors", dtype=torch.float16)
    models = {"unet": components.unet, "l": components.text_encoders[0]}
    before = {k: v.clone() for k, v in components.unet.state_dict().items()}
    lora = read_lora_file(models_root / "loras" / KOHYA)
    saved = apply(models, [(lora, 1.0), (lora, -0.3)])
    assert saved and any(not torch.equal(before[k], v) for k, v in components.unet.state_dict().items())
    restore(models, saved)
    assert all(torch.equal(before[k], v) for k, v in components.unet.state_dict().items())


@pytest.mark.parametrize("name", [KOHYA, DIFFUSERS])
def test_parity_with_diffusers_load_lora_weights_and_fuse(runner, models_root, name):
    """Our LoraLoader + KSampler against StableDiffusionPipeline.load_lora_weights + fuse_lora on the same file
    (diffusers converts the kohya names with its own converter), from the same starting latent."""
    steps, seed, cfg = 5, 123, 6.5
    prompt = txt2img(**{"3.steps": steps, "3.seed": seed, "3.cfg": cfg, "3.sampler_name": "dpmpp_2m",
                        "3.scheduler": "simple", "6.text": "a red square", "7.text": "blurry"})
    ours = latent(runner, with_lora(prompt, name=name))

    components = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1.safetensors")
    scheduler = DPMSolverMultistepScheduler.from_config(components.scheduler_config, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoders[0], tokenizer=components.tokenizers[0],
        unet=components.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    te_before = components.text_encoders[0].state_dict()["encoder.layers.0.self_attn.q_proj.weight"].clone()
    pipe.load_lora_weights(str(models_root / "loras" / name))
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # keeps the fused weights, removes the adapter layers
    te_after = components.text_encoders[0].state_dict()["encoder.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(te_before, te_after)  # diffusers did patch the text encoder too
    ms = DiscreteModelSampling.from_config(components.scheduler_config)
    sigma0 = float(ksampler_sigmas(ms, "simple", "dpmpp_2m", steps)[0])
    noise = prepare_noise(torch.zeros(1, 4, 8, 8), seed)
    start = ms.noise_scaling(sigma0, noise, torch.zeros_like(noise)) / (1 + sigma0**2) ** 0.5
    theirs = pipe("a red square", negative_prompt="blurry", num_inference_steps=steps, guidance_scale=cfg,
                  height=64, width=64, latents=start, output_type="latent").images
    difference = (ours * FAMILIES["sd1"].latent_scale - theirs).abs().max().item()
    print(f"LoRA parity ({name}): max |latent difference| = {difference:.2e}")
    assert difference <= 1e-4


def test_loha_and_lokr_files_patch_the_layers_they_name(models_root):
    """LyCORIS files in kohya naming: the named layer changes by exactly the adapter's delta, nothing else."""
    components = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1.safetensors")
    unet = components.unet
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    weight = unet.get_submodule(path).weight
    out_features, in_features = weight.shape
    name = "lora_unet_" + path.replace(".", "_")
    torch.manual_seed(1)
    loha = {f"{name}.hada_w1_a": torch.randn(out_features, 2), f"{name}.hada_w1_b": torch.randn(2, in_features),
            f"{name}.hada_w2_a": torch.randn(out_features, 2), f"{name}.hada_w2_b": torch.randn(2, in_features),
            f"{name}.alpha": torch.tensor(1.0)}
    lokr = {f"{name}.lokr_w1": torch.randn(2, 4), f"{name}.lokr_w2": torch.randn(out_features // 2, in_features // 4)}
    expected = {
        "loha": 0.5 * (loha[f"{name}.hada_w1_a"] @ loha[f"{name}.hada_w1_b"])
        * (loha[f"{name}.hada_w2_a"] @ loha[f"{name}.hada_w2_b"]),
        "lokr": torch.kron(lokr[f"{name}.lokr_w1"], lokr[f"{name}.lokr_w2"]),
    }
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    for kind, state in (("loha", loha), ("lokr", lokr)):
        lora = parse_lora(state, kind)
        saved = apply({"unet": unet}, [(lora, 0.8)])
        assert list(saved) == [("unet", path)]
        assert torch.allclose(unet.get_submodule(path).weight, before[path + ".weight"] + 0.8 * expected[kind],
                              atol=1e-5)
        restore({"unet": unet}, saved)
        assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


def test_comfyui_layout_with_original_unet_paths(models_root):
    """ComfyUI's own LoRA files name UNet layers by their original path under `diffusion_model.`."""
    from nodegraph_nodes.diffusion.keymap import unet_to_original
    from nodegraph_testmodels.lora import lora_layers

    components = read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1.safetensors")
    config = dict(components.unet.config)
    state = {}
    for model, path, down, up in lora_layers(components, seed=3):
        if model != "unet":
            continue
        (original,) = unet_to_original({path + ".weight": None}, config)
        name = "diffusion_model." + original.removesuffix(".weight")
        state[f"{name}.lora_down.weight"], state[f"{name}.lora_up.weight"] = down, up
    targets, unmatched = match(parse_lora(state, "comfy"), {"unet": components.unet})
    assert not unmatched and len(targets) == len(state) // 2
    paths = {path for model, path, _, _ in lora_layers(components, seed=3) if model == "unet"}
    assert {t.path for t in targets} == paths


def test_side_by_side_prompts_share_a_patch_set_and_wait_for_another(models_root):
    """`serve --concurrency`: prompts that want the same LoRAs use the model together; one that wants other LoRAs
    waits until the model is free of them, so nobody samples with another prompt's patches."""
    import threading

    from nodegraph_nodes.diffusion.ops import load_checkpoint as load_handles, load_lora, use_model

    runtime = Runtime(Folders(settings={"device": "cpu"}))
    cache = model_cache(runtime)
    cache.free(unload_models=True)
    base, _, _ = load_handles(runtime, models_root / "checkpoints" / "tiny_sd1.safetensors")
    lora_a, _ = load_lora(runtime, base, None, models_root / "loras" / KOHYA, 1.0, 0.0)
    lora_b, _ = load_lora(runtime, base, None, models_root / "loras" / KOHYA, -0.5, 0.0)

    def checksum(unet) -> float:
        return float(sum(p.double().sum() for p in unet.parameters()))

    with cache.use(base.ref) as unet:
        plain = checksum(unet)
    seen: dict[str, list[float]] = {"a1": [], "a2": [], "b": []}
    inside_a = threading.Barrier(2, timeout=30)  # both "a" users are inside at once: they share

    def user(name: str, handle, wait_for_partner: bool) -> None:
        with use_model(cache, handle) as unet:
            seen[name].append(checksum(unet))
            if wait_for_partner:
                inside_a.wait()
            seen[name].append(checksum(unet))

    threads = [threading.Thread(target=user, args=("a1", lora_a, True)),
               threading.Thread(target=user, args=("a2", lora_a, True))]
    for t in threads:
        t.start()
    later = threading.Thread(target=user, args=("b", lora_b, False))
    later.start()
    for t in threads:
        t.join()
    later.join()
    assert seen["a1"][0] == seen["a2"][0] == seen["a1"][1] == seen["a2"][1] != plain
    assert seen["b"][0] == seen["b"][1] not in (plain, seen["a1"][0])
    with cache.use(base.ref) as unet:
        assert checksum(unet) == plain  # the base is back after everyone left
