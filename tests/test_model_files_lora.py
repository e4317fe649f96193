"""Merges and saves of LoRA-patched models, and merges / saves that run while another prompt samples with a LoRA
applied to the same cached base (`serve --concurrency`).

References: a LoRA-loaded MODEL's weights as the sampler sees them (captured inside its use), the builders' own
base modules (tiny_sd1), and images sampled from the LoRA-loaded checkpoint; a saved file is loaded back plain
(no LoRA node) and must give the LoRA-loaded model's image.
"""
from __future__ import annotations

import threading

import pytest
import torch

from nodegraph_nodes.diffusion.cache_readers import model_cache
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file as load_checkpoint
from nodegraph_nodes.diffusion.keymap import write_single_file
from nodegraph_nodes.diffusion.ops import load_checkpoint as load_handles
from nodegraph_nodes.diffusion.ops import load_lora, use_clip, use_model
from nodegraph_nodes.diffusion.tiny import tiny_sd1
from nodegraph_testmodels.files import make_tiny_models
from support.sd import Runner, make_folders
from support.workflows import txt2img_from

KOHYA = "tiny_lora_sd1_kohya.safetensors"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    make_tiny_models(root)
    write_single_file(tiny_sd1(1), root / "checkpoints" / "tiny_sd1_b.safetensors")
    return root


def _runner(tmp_path, models_root, max_batch: int = 1) -> Runner:
    """A runner with a runtime (and model cache) of its own."""
    folders = make_folders(tmp_path, models_root)
    folders.models_dirs.append(tmp_path / "output")  # what the savers write is read back from there
    if max_batch > 1:
        folders.settings = {"device": "cpu", "max_batch": max_batch}
    return Runner(folders)


@pytest.fixture
def runner(tmp_path, models_root):
    return _runner(tmp_path, models_root)


def loaders(lora: bool, strength_model: float = 1.0, strength_clip: float = 1.0) -> dict:
    """Checkpoint "1" (tiny_sd1), checkpoint "2" (tiny_sd1_b) and, with `lora`, LoraLoader "10" on "1"."""
    out = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1_b.safetensors"}},
    }
    if lora:
        out["10"] = {"class_type": "LoraLoader", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "lora_name": KOHYA,
            "strength_model": strength_model, "strength_clip": strength_clip}}
    return out


def image_of(run) -> torch.Tensor:
    assert run.status == "success", run.error
    return run.values["24"][0]


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_weights(actual: dict, reference: dict, atol: float = 1e-6) -> None:
    assert sorted(actual) == sorted(reference)
    for key in reference:
        torch.testing.assert_close(actual[key], reference[key], rtol=0, atol=atol, msg=key)


def handles(runtime, models_root, strength: float = 1.0):
    """(base MODEL, base CLIP, LoRA MODEL, LoRA CLIP) handles of tiny_sd1 in `runtime`'s model cache, as the
    loader nodes make them."""
    base, clip, _ = load_handles(runtime, models_root / "checkpoints" / "tiny_sd1.safetensors")
    lora_model, lora_clip = load_lora(runtime, base, clip, models_root / "loras" / KOHYA, strength, strength)
    return base, clip, lora_model, lora_clip


def patched_weights(runtime, models_root) -> tuple[dict, dict]:
    """The LoRA model's UNet and CLIP-L weights exactly as the sampler and the text encoder use them."""
    cache = model_cache(runtime)
    _, _, lora_model, lora_clip = handles(runtime, models_root)
    with use_model(cache, lora_model) as unet:
        unet_weights = state(unet)
    with use_clip(cache, lora_clip) as parts:
        clip_weights = state(parts["models"]["l"])
    return unet_weights, clip_weights


# --- baking: saves and merges of LoRA-loaded models ----------------------------------------------------------------


def test_checkpoint_save_bakes_the_lora_and_the_plain_reload_gives_the_lora_image(runner, tmp_path, models_root):
    with_lora = image_of(runner.run(txt2img_from(["10", 0], ["10", 1], ["1", 2], loaders(True))))
    plain = image_of(runner.run(txt2img_from(["1", 0], ["1", 1], ["1", 2], loaders(False))))
    assert (with_lora - plain).abs().max() > 1e-3  # the LoRA changes the picture
    graph = {**loaders(True), "3": {"class_type": "CheckpointSave", "inputs": {
        "model": ["10", 0], "clip": ["10", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/baked"}}}
    assert runner.run(graph).status == "success"
    reloaded = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "baked_00001_.safetensors"}}}
    assert torch.equal(image_of(runner.run(txt2img_from(["1", 0], ["1", 1], ["1", 2], reloaded))), with_lora)
    # the file holds the patched weights, and the cached base was left as it was
    runtime = runner.executor.runtime
    unet_weights, clip_weights = patched_weights(runtime, models_root)
    saved = load_checkpoint(tmp_path / "output" / "checkpoints" / "baked_00001_.safetensors")
    assert_weights(state(saved.unet), unet_weights, atol=0)
    assert_weights(state(saved.text_encoders[0]), clip_weights, atol=0)
    cache = model_cache(runtime)
    base, _, _, _ = handles(runtime, models_root)
    with cache.use(base.ref) as unet:
        assert_weights(state(unet), state(tiny_sd1(0).unet), atol=0)


def test_model_and_clip_saves_bake_the_lora_for_the_component_loaders(runner, models_root):
    with_lora = image_of(runner.run(txt2img_from(["10", 0], ["10", 1], ["1", 2], loaders(True, 0.8, 0.6))))
    graph = {**loaders(True, 0.8, 0.6),
             "3": {"class_type": "ModelSave", "inputs": {"model": ["10", 0], "filename_prefix": "diffusion_models/b"}},
             "4": {"class_type": "CLIPSave", "inputs": {"clip": ["10", 1], "filename_prefix": "clip/b"}}}
    assert runner.run(graph).status == "success"
    reloaded = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
        "5": {"class_type": "UNETLoader", "inputs": {"unet_name": "b_00001_.safetensors", "weight_dtype": "default"}},
        "6": {"class_type": "CLIPLoader", "inputs": {"clip_name": "b_clip_l_00001_.safetensors",
                                                     "type": "stable_diffusion"}},
    }
    assert torch.equal(image_of(runner.run(txt2img_from(["5", 0], ["6", 0], ["1", 2], reloaded))), with_lora)


def merged(runner, graph: dict, nid: str) -> dict:
    graph = {**graph, "9": {"class_type": "PreviewAny", "inputs": {"source": [nid, 0]}}}
    run = runner.run(graph)
    assert run.status == "success", run.error
    handle = run.values[nid][0]
    assert handle.patches == ()  # the LoRAs are in the merged weights now
    with model_cache(runner.executor.runtime).use(handle.ref) as value:
        if isinstance(value, dict):
            return state(value["models"]["l"])
        return state(value)


def test_merges_of_lora_models_merge_the_patched_weights(runner, models_root):
    """ComfyUI: ratio * (W1 + dW1) + (1 - ratio) * W2 for a LoRA-loaded model1; the same for CLIP merges."""
    unet_patched, clip_patched = patched_weights(runner.executor.runtime, models_root)
    b = tiny_sd1(1)
    unet_b, clip_b = state(b.unet), state(b.text_encoders[0])
    graph = {**loaders(True), "3": {"class_type": "ModelMergeSimple", "inputs": {
        "model1": ["10", 0], "model2": ["2", 0], "ratio": 0.4}}}
    assert_weights(merged(runner, graph, "3"),
                   {k: 0.4 * v + 0.6 * unet_b[k] if v.is_floating_point() else v for k, v in unet_patched.items()})
    # the LoRA model as model2, subtracted
    graph = {**loaders(True), "3": {"class_type": "ModelMergeSubtract", "inputs": {
        "model1": ["2", 0], "model2": ["10", 0], "multiplier": 0.5}}}
    assert_weights(merged(runner, graph, "3"),
                   {k: 0.5 * v - 0.5 * unet_patched[k] if v.is_floating_point() else v for k, v in unet_b.items()})
    graph = {**loaders(True), "3": {"class_type": "CLIPMergeSimple", "inputs": {
        "clip1": ["10", 1], "clip2": ["2", 1], "ratio": 0.25}}}
    reference = {k: v if k.endswith(".position_ids") or not v.is_floating_point() else 0.25 * v + 0.75 * clip_b[k]
                 for k, v in clip_patched.items()}
    assert_weights(merged(runner, graph, "3"), reference)


def test_merge_at_ratio_one_of_a_lora_model_samples_as_the_lora_model(runner):
    with_lora = image_of(runner.run(txt2img_from(["10", 0], ["10", 1], ["1", 2], loaders(True))))
    graph = {**loaders(True), "3": {"class_type": "ModelMergeSimple", "inputs": {
        "model1": ["10", 0], "model2": ["2", 0], "ratio": 1.0}}}
    assert torch.equal(image_of(runner.run(txt2img_from(["3", 0], ["10", 1], ["1", 2], graph))), with_lora)


# --- the race: merges and saves while another prompt samples with a LoRA on the same cached base ----------------


@pytest.mark.parametrize("max_batch", [1, 4])
def test_merge_and_save_beside_a_lora_prompt_read_the_base_weights(tmp_path, models_root, max_batch):
    """One thread holds the cached tiny_sd1 UNet and CLIP with a LoRA applied (a prompt sampling with it under
    `serve --concurrency`); meanwhile merges and saves of the plain checkpoint run. They must read the base
    weights, not the LoRA's. max_batch 4 lends the UNet through the side-by-side batcher, as `--concurrency` does."""
    runner = _runner(tmp_path, models_root, max_batch)
    runtime = runner.executor.runtime  # the prompts below and the LoRA user share its model cache
    cache = model_cache(runtime)
    assert cache.max_batch == max_batch
    _, _, lora_model, lora_clip = handles(runtime, models_root)
    applied, done = threading.Event(), threading.Event()
    seen: dict[str, float] = {}

    def lora_prompt() -> None:
        with use_model(cache, lora_model) as unet, use_clip(cache, lora_clip):
            seen["patched"] = float(sum(p.detach().double().sum() for p in unet.parameters()))
            applied.set()
            done.wait(timeout=600)

    holder = threading.Thread(target=lora_prompt)
    holder.start()
    try:
        assert applied.wait(timeout=600)
        graph = {**loaders(False),
                 "3": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["2", 0],
                                                                   "ratio": 0.3}},
                 "4": {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["1", 1], "clip2": ["2", 1],
                                                                  "ratio": 0.3}},
                 "5": {"class_type": "CheckpointSave", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                                 "vae": ["1", 2], "filename_prefix": "checkpoints/side"}},
                 "6": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
                 "7": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
        run = runner.run(graph)  # runs while the LoRA is applied to the cached weights
        assert run.status == "success", run.error
        assert not done.is_set() and holder.is_alive()
        with cache.use(run.values["3"][0].ref) as unet:
            unet_merge = state(unet)
        with cache.use(run.values["4"][0].ref) as parts:
            clip_merge = state(parts["models"]["l"])
    finally:
        done.set()
        holder.join()
    a, b = tiny_sd1(0), tiny_sd1(1)
    ua, ub = state(a.unet), state(b.unet)
    assert_weights(unet_merge, {k: 0.3 * v + 0.7 * ub[k] if v.is_floating_point() else v for k, v in ua.items()})
    ca, cb = state(a.text_encoders[0]), state(b.text_encoders[0])
    assert_weights(clip_merge, {k: v if k.endswith(".position_ids") or not v.is_floating_point()
                                else 0.3 * v + 0.7 * cb[k] for k, v in ca.items()})
    saved = load_checkpoint(tmp_path / "output" / "checkpoints" / "side_00001_.safetensors")
    assert_weights(state(saved.unet), ua, atol=0)
    assert_weights(state(saved.text_encoders[0]), ca, atol=0)
    assert seen["patched"] != float(sum(p.detach().double().sum() for p in a.unet.parameters()))  # the LoRA was on
