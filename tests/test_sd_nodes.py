"""The SD node pack end to end on tiny models: ComfyUI workflows run unchanged, caching, files, loaders."""
import json

import numpy as np
import torch
from PIL import Image

from nodegraph_nodes.diffusion.cache_readers import model_cache
from support.workflows import txt2img


def latent_of(run, nid="3"):
    return run.values[nid][0]["samples"]


def test_txt2img_writes_a_png_with_its_workflow(runner, tmp_path):
    events = []
    workflow_ui = {"nodes": [], "links": [], "version": 0.4}
    run = runner.run(txt2img(), events, extra_data={"extra_pnginfo": {"workflow": workflow_ui}})
    assert run.status == "success", run.error
    (image,) = run.outputs["9"]["images"]
    assert image == {"filename": "test_00001_.png", "subfolder": "", "type": "output"}
    path = tmp_path / "output" / "test_00001_.png"
    with Image.open(path) as png:
        assert png.size == (64, 64)
        assert json.loads(png.text["prompt"])["3"]["class_type"] == "KSampler"
        assert json.loads(png.text["workflow"]) == workflow_ui
    progress = [d for e, d in events if e == "progress"]
    assert [p["value"] for p in progress] == [1, 2, 3, 4] and all(p["node"] == "3" for p in progress)
    previews = [d for e, d in events if e == "preview"]
    assert len(previews) == 4 and previews[0]["image"].size[0] > 0
    # a second run numbers the next file
    runner.run(txt2img(**{"3.seed": 43}))
    assert (tmp_path / "output" / "test_00002_.png").exists()


def test_seed_only_change_reruns_sampler_and_downstream(runner):
    runner.run(txt2img())
    run = runner.run(txt2img(**{"3.seed": 7}))
    assert run.executed == ["3", "8", "9"]
    assert set(run.cached) == {"4", "5", "6", "7"}
    again = runner.run(txt2img(**{"3.seed": 7}))
    assert again.executed == [] and again.outputs["9"] == run.outputs["9"]


def test_same_seed_same_latent_and_different_seed_differs(runner):
    a = latent_of(runner.run(txt2img(**{"9.filename_prefix": "a"})))
    runner.executor.cache.clear()
    b = latent_of(runner.run(txt2img(**{"9.filename_prefix": "b"})))
    c = latent_of(runner.run(txt2img(**{"3.seed": 1})))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (1, 4, 8, 8) and a.dtype == torch.float32 and a.device.type == "cpu"


def test_checkpoint_read_once_across_prompts_and_loader_nodes(runner):
    cache = model_cache(runner.executor.runtime)
    before = cache.stats()["file_reads"]
    prompt = txt2img()
    # a second loader node for the same file in the same prompt
    prompt["10"] = {"class_type": "LoadCheckpoint", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}}
    prompt["8"]["inputs"]["vae"] = ["10", 2]
    runner.run(prompt)
    runner.executor.cache.clear()  # force the nodes to run again: the model cache must still hit
    runner.run(txt2img(**{"3.seed": 5}))
    assert cache.stats()["file_reads"] - before == 1


def test_diffusers_folder_gives_the_same_result(runner):
    file_latent = latent_of(runner.run(txt2img()))
    folder_latent = latent_of(runner.run(txt2img(**{"4.ckpt_name": "tiny_sd1"})))
    assert torch.equal(file_latent, folder_latent)


def test_img2img_and_load_image_mask(runner, tmp_path):
    (tmp_path / "input").mkdir()
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:32, :, 3] = 0  # top half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "input" / "in.png")
    prompt = txt2img(**{"3.denoise": 0.5})
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"]["latent_image"] = ["11", 0]
    prompt["12"] = {"class_type": "ShowText", "inputs": {"value": ["10", 1]}}
    run = runner.run(prompt)
    assert run.status == "success", run.error
    image, mask = run.values["10"]
    assert image.shape == (1, 64, 64, 3) and abs(float(image[0, 0, 0, 0]) - 200 / 255) < 1e-6
    assert mask.shape == (1, 64, 64) and float(mask[0, :32].mean()) == 1.0 and float(mask[0, 32:].mean()) == 0.0
    # denoise 0: the latent comes back unchanged
    zero = runner.run({**prompt, "3": {**prompt["3"], "inputs": {**prompt["3"]["inputs"], "denoise": 0.0}}})
    assert torch.equal(latent_of(zero), zero.values["11"][0]["samples"])


def test_load_image_validation(runner):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    result = runner.validate(prompt)
    assert result.node_errors["1"]["errors"][0]["type"] == "custom_validation_failed"
    prompt["1"]["inputs"]["image"] = "../../etc/passwd"
    result = runner.validate(prompt)
    assert "outside" in result.node_errors["1"]["errors"][0]["details"]


def test_save_image_subfolder_stays_inside(runner, tmp_path):
    run = runner.run(txt2img(**{"9.filename_prefix": "sub/dir/shot"}))
    assert run.outputs["9"]["images"][0] == {"filename": "shot_00001_.png", "subfolder": "sub/dir", "type": "output"}
    assert (tmp_path / "output" / "sub" / "dir" / "shot_00001_.png").exists()
    bad = runner.validate(txt2img(**{"9.filename_prefix": "../escape/x"}))
    assert not bad.ok and "inside the output folder" in bad.node_errors["9"]["errors"][0]["details"]


def test_hires_fix_latent_upscale_second_pass(runner):
    prompt = txt2img()
    prompt["20"] = {"class_type": "LatentUpscale", "inputs": {
        "samples": ["3", 0], "upscale_method": "bislerp", "width": 96, "height": 96, "crop": "disabled"}}
    prompt["21"] = {"class_type": "KSampler", "inputs": {
        "seed": 1, "steps": 3, "cfg": 7.0, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.5,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["20", 0]}}
    prompt["8"]["inputs"]["samples"] = ["21", 0]
    run = runner.run(prompt)
    assert run.status == "success", run.error
    assert run.values["20"][0]["samples"].shape == (1, 4, 12, 12)
    assert run.values["8"][0].shape == (1, 96, 96, 3)


def test_vae_loader_and_clip_set_last_layer_change_results(runner):
    base = runner.run(txt2img())
    prompt = txt2img()
    prompt["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_vae.safetensors"}}
    prompt["8"]["inputs"]["vae"] = ["10", 0]
    other_vae = runner.run(prompt)
    assert torch.equal(latent_of(base), latent_of(other_vae))  # same latent...
    assert not torch.allclose(base.values["8"][0], other_vae.values["8"][0])  # ...decoded differently
    prompt = txt2img()
    prompt["11"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}}
    prompt["6"]["inputs"]["clip"] = ["11", 0]
    skipped = runner.run(prompt)
    assert not torch.allclose(base.values["6"][0].embeds, skipped.values["6"][0].embeds)


def test_custom_sampler_nodes_equal_ksampler(runner):
    ks = runner.run(txt2img())
    prompt = txt2img()
    prompt["30"] = {"class_type": "BasicScheduler", "inputs": {
        "model": ["4", 0], "scheduler": "normal", "steps": 4, "denoise": 1.0}}
    prompt["31"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["32"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": True, "noise_seed": 42, "cfg": 7.0, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["31", 0], "sigmas": ["30", 0], "latent_image": ["5", 0]}}
    prompt["8"]["inputs"]["samples"] = ["32", 0]
    custom = runner.run(prompt)
    assert custom.status == "success", custom.error
    sigmas = custom.values["30"][0]
    assert sigmas.shape == (5,) and float(sigmas[-1]) == 0.0
    assert torch.allclose(custom.values["32"][0]["samples"], latent_of(ks), atol=1e-6)


def test_interrupt_inside_the_sampler(runner):
    events = []

    def on_event(event, data):
        events.append(event)
        if event == "progress" and data["value"] == 2:
            runner.executor.interrupt()

    import asyncio

    result = runner.validate(txt2img(**{"3.steps": 50}))
    run = asyncio.run(runner.run_async(result, "p", on_event=on_event))
    assert run.status == "interrupted" and run.error["node_id"] == "3"
    assert events.count("progress") < 50


def test_pickled_checkpoint_is_refused_with_a_clear_error(runner, models_root):
    (models_root / "checkpoints" / "old.ckpt").write_bytes(b"not really a pickle")
    run = runner.run(txt2img(**{"4.ckpt_name": "old.ckpt"}))
    assert run.status == "error" and run.error["node_id"] == "4"
    assert "safetensors" in run.error["exception_message"]
