"""Component loaders, savers and merges on the tiny models: UNETLoader, CLIPLoader, DualCLIPLoader, CheckpointLoader
(with config), CheckpointSave / CLIPSave / VAESave / ModelSave, ModelMerge* and CLIPMerge*.

References are independent of the code under test: split-file workflows are compared with the single-file
checkpoint that holds the same weights (make_tiny_models writes both from one builder), merges with weight
averages computed here from the builders' own modules, saves by loading the written files back.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nodegraph_nodes.diffusion.keymap import write_single_file
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file
from nodegraph_testmodels.files import make_tiny_models
from nodegraph_nodes.diffusion.cache_readers import model_cache
from nodegraph_nodes.diffusion.split_files import (
    detect_unet_family,
    read_text_encoder_file,
    read_unet_file,
    text_encoder_kind,
)
from nodegraph_nodes.diffusion.tiny import tiny_sd1, tiny_sdxl
from support.models import assert_same_weights, real_layout_shapes
from support.sd import Runner, make_folders
from support.workflows import txt2img_from


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    make_tiny_models(root)
    # a second SD1 with other weights, to merge with tiny_sd1
    write_single_file(tiny_sd1(1), root / "checkpoints" / "tiny_sd1_b.safetensors")
    configs = root / "configs"
    configs.mkdir()
    # the parts of original inference configs that matter here (LDM for SD1 / SD2, SGM for SDXL)
    (configs / "v1-inference.yaml").write_text(
        "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    scale_factor: 0.18215\n"
        "    unet_config:\n      params:\n        context_dim: 768\n")
    (configs / "v2-inference-v.yaml").write_text(
        "model:\n  params:\n    parameterization: \"v\"\n    scale_factor: 0.18215\n")
    (configs / "sd_xl_base.yaml").write_text(
        "model:\n  target: sgm.models.diffusion.DiffusionEngine\n  params:\n    scale_factor: 0.13025\n"
        "    denoiser_config:\n      params:\n        scaling_config:\n"
        "          target: sgm.modules.diffusionmodules.denoiser_scaling.EpsScaling\n")
    return root


@pytest.fixture
def runner(tmp_path, models_root):
    folders = make_folders(tmp_path, models_root)
    # what the savers write under output/ is a models root too, so the loaders can read it back
    folders.models_dirs.append(tmp_path / "output")
    return Runner(folders)


def checkpoint(name: str) -> dict:
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}}


def image_of(run):
    assert run.status == "success", run.error
    return run.values["24"][0]


def ckpt_image(runner, name: str, seed: int = 42):
    return image_of(runner.run(txt2img_from(["1", 0], ["1", 1], ["1", 2], checkpoint(name), seed)))


# --- split files ----------------------------------------------------------------------------------------------------


def test_split_sdxl_unet_dual_clip_vae_equals_the_checkpoint(runner):
    loaders = {
        "1": {"class_type": "UNETLoader",
              "inputs": {"unet_name": "tiny_sdxl_unet.safetensors", "weight_dtype": "default"}},
        # CLIP-G first: ComfyUI takes the two files in either order
        "2": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "tiny_sdxl_clip_g.safetensors", "clip_name2": "tiny_sdxl_clip_l.safetensors",
            "type": "sdxl"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_sdxl_vae.safetensors"}},
    }
    split = image_of(runner.run(txt2img_from(["1", 0], ["2", 0], ["3", 0], loaders)))
    whole = ckpt_image(runner, "tiny_sdxl.safetensors")
    assert torch.equal(split, whole)
    assert split.std() > 0.01  # a real image, not a constant


def test_split_sd1_unet_and_clip_l_equal_the_checkpoint(runner):
    loaders = {
        **checkpoint("tiny_sd1.safetensors"),
        "2": {"class_type": "UNETLoader",
              "inputs": {"unet_name": "tiny_sd1_unet.safetensors", "weight_dtype": "default"}},
        "3": {"class_type": "CLIPLoader",
              "inputs": {"clip_name": "tiny_sd1_clip_l.safetensors", "type": "stable_diffusion"}},
    }
    split = image_of(runner.run(txt2img_from(["2", 0], ["3", 0], ["1", 2], loaders)))
    assert torch.equal(split, ckpt_image(runner, "tiny_sd1.safetensors"))


def test_unet_files_in_both_layouts_hold_the_builders_weights(models_root):
    family, unet, scheduler = read_unet_file(models_root / "diffusion_models" / "tiny_sd1_unet.safetensors")
    assert family.name == "sd1" and scheduler["prediction_type"] == "epsilon"
    assert_same_weights(unet, tiny_sd1(0).unet)
    with safe_open(str(models_root / "diffusion_models" / "tiny_sd1_unet.safetensors"), "pt") as f:
        assert all(k.startswith("model.diffusion_model.") for k in f.keys())
    family, unet, _ = read_unet_file(models_root / "diffusion_models" / "tiny_sdxl_unet.safetensors")
    assert family.name == "sdxl"
    assert_same_weights(unet, tiny_sdxl(0).unet)
    with safe_open(str(models_root / "diffusion_models" / "tiny_sdxl_unet.safetensors"), "pt") as f:
        assert "input_blocks.0.0.weight" in f.keys()  # bare keys
    # a whole checkpoint works as a UNet file too (its UNet keys are read)
    family, unet, _ = read_unet_file(models_root / "checkpoints" / "tiny_sd1.safetensors")
    assert family.name == "sd1"
    assert_same_weights(unet, tiny_sd1(0).unet)


def test_unet_family_is_recognised_from_unet_keys_alone():
    for name in ("sd1", "sdxl", "sdxl_refiner"):
        unet_only = {k: s for k, s in real_layout_shapes(name).items() if k.startswith("model.diffusion_model.")}
        assert detect_unet_family(unet_only).name == name
    sd2 = {k: s for k, s in real_layout_shapes("sd2").items() if k.startswith("model.diffusion_model.")}
    assert detect_unet_family(sd2).name == "sd2_base"  # the v-prediction probe needs values; without them, base
    assert detect_unet_family({"model.diffusion_model.foo": (1,)}) is None


def test_text_encoder_files_hold_the_builders_weights(models_root):
    sd1, sdxl = tiny_sd1(0), tiny_sdxl(0)
    for name, kind, expected in (("tiny_sd1_clip_l", "l", sd1.text_encoders[0]),
                                 ("tiny_sdxl_clip_l", "l", sdxl.text_encoders[0]),
                                 ("tiny_sdxl_clip_g", "g", sdxl.text_encoders[1])):
        loaded = read_text_encoder_file(models_root / "text_encoders" / f"{name}.safetensors")
        assert loaded.kind == kind
        assert_same_weights(loaded.model, expected)
    with safe_open(str(models_root / "text_encoders" / "tiny_sdxl_clip_g.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "text_projection.weight" in keys and "text_model.final_layer_norm.weight" in keys


def test_text_encoder_without_header_is_read_by_its_width(tmp_path):
    """A real-width (768) CLIP-L with one layer and a small vocabulary, as a header-less file in ComfyUI's layout
    (with the unused projection and position ids ComfyUI's files carry): loaded with the bundled CLIP-L config."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodegraph_nodes.diffusion.families import bundled_config

    config = {k: v for k, v in bundled_config("sd15", "text_encoder").items() if k != "architectures"}
    config.update(num_hidden_layers=1, vocab_size=16)
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig.from_dict(config)).eval()
    state = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in model.state_dict().items()}
    state["text_projection.weight"] = torch.eye(768)
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    path = tmp_path / "clip_l.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert text_encoder_kind(path) == "l"
    loaded = read_text_encoder_file(path)
    assert loaded.kind == "l"
    assert_same_weights(loaded.model, model)
    for width, kind in ((1024, "h"), (1280, "g")):
        other = tmp_path / f"w{width}.safetensors"
        save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(8, width)}, str(other))
        assert text_encoder_kind(other) == kind
    odd = tmp_path / "odd.safetensors"
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(8, 32)}, str(odd))
    with pytest.raises(ValueError, match="CLIP-L \\(width 768\\)"):
        text_encoder_kind(odd)


def test_unet_and_clip_folders_also_read_from_their_old_names(tmp_path, models_root):
    root = tmp_path / "models"
    (root / "unet").mkdir(parents=True)
    (root / "clip").mkdir()
    unet = models_root / "diffusion_models" / "tiny_sd1_unet.safetensors"
    clip = models_root / "text_encoders" / "tiny_sd1_clip_l.safetensors"
    (root / "unet" / "old.safetensors").write_bytes(unet.read_bytes())
    (root / "clip" / "old_l.safetensors").write_bytes(clip.read_bytes())
    folders = make_folders(tmp_path, root)
    assert folders.list_models("diffusion_models") == ["old.safetensors"]
    assert folders.list_models("text_encoders") == ["old_l.safetensors"]
    assert folders.model_path("diffusion_models", "old.safetensors") == (root / "unet" / "old.safetensors").resolve()


def test_loader_type_choices_are_comfyuis_and_unsupported_ones_fail_clearly(runner):
    from nodegraph.engine import default_registry

    info = default_registry().get("CLIPLoader").object_info(None)["input"]
    assert info["required"]["type"][0][:3] == ["stable_diffusion", "stable_cascade", "sd3"]
    assert info["optional"]["device"][0] == ["default", "cpu"]
    dual = default_registry().get("DualCLIPLoader").object_info(None)["input"]["required"]["type"][0]
    assert dual[0] == "sdxl" and "flux" in dual
    prompt = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "tiny_sd1_clip_l.safetensors", "type": "sd3"}},
              "2": {"class_type": "CLIPSave", "inputs": {"clip": ["1", 0], "filename_prefix": "clip/x"}}}
    run = runner.run(prompt)
    assert run.status == "error" and run.error["node_id"] == "1"
    assert "'sd3'" in run.error["exception_message"] and "stable_diffusion (l)" in run.error["exception_message"]
    two_l = {"1": {"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "tiny_sdxl_clip_l.safetensors", "clip_name2": "tiny_sd1_clip_l.safetensors", "type": "sdxl"}},
        "2": {"class_type": "CLIPSave", "inputs": {"clip": ["1", 0], "filename_prefix": "clip/x"}}}
    run = runner.run(two_l)
    assert run.status == "error" and "sdxl (g+l)" in run.error["exception_message"]
    fp8 = {"1": {"class_type": "UNETLoader",
                 "inputs": {"unet_name": "tiny_sd1_unet.safetensors", "weight_dtype": "fp8_e4m3fn"}},
           "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "diffusion_models/x"}}}
    run = runner.run(fp8)
    assert run.status == "error" and "fp8" in run.error["exception_message"]


# --- CheckpointLoader (with config) -----------------------------------------------------------------------------------


def test_checkpoint_loader_with_config(runner, models_root):
    def with_config(config: str) -> dict:
        return {"1": {"class_type": "CheckpointLoader",
                      "inputs": {"config_name": config, "ckpt_name": "tiny_sd1.safetensors"}}}

    assert runner.folders.list_models("configs") == ["sd_xl_base.yaml", "v1-inference.yaml", "v2-inference-v.yaml"]
    eps = image_of(runner.run(txt2img_from(["1", 0], ["1", 1], ["1", 2], with_config("v1-inference.yaml"))))
    assert torch.equal(eps, ckpt_image(runner, "tiny_sd1.safetensors"))
    run = runner.run(txt2img_from(["1", 0], ["1", 1], ["1", 2], with_config("v2-inference-v.yaml")))
    model = run.values["1"][0]
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    assert not torch.equal(image_of(run), eps)  # the config's v-prediction is used by the sampler
    from nodegraph_nodes.diffusion.component_ops import read_original_config

    assert read_original_config(models_root / "configs" / "sd_xl_base.yaml") == {
        "prediction_type": "epsilon", "latent_scale": 0.13025}


# --- merges --------------------------------------------------------------------------------------------------------


def merge_prompt(node: str, **inputs) -> dict:
    return {
        **checkpoint("tiny_sd1.safetensors"),
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1_b.safetensors"}},
        "3": {"class_type": node, "inputs": inputs},
    }


def merged_weights(runner, prompt: dict, nid: str = "3") -> dict:
    prompt = {**prompt, "9": {"class_type": "PreviewAny", "inputs": {"source": [nid, 0]}}}
    run = runner.run(prompt)
    assert run.status == "success", run.error
    handle = run.values[nid][0]
    with model_cache(runner.executor.runtime).use(handle.ref) as value:
        if isinstance(value, dict):
            return {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in value["models"].items()}
        return {k: v.clone() for k, v in value.state_dict().items()}


def expected(a: float, b: float, m1: torch.nn.Module, m2: torch.nn.Module, skip=()) -> dict:
    s1, s2 = m1.state_dict(), m2.state_dict()
    return {k: v if k.endswith(skip) or not v.is_floating_point() else a * v + b * s2[k] for k, v in s1.items()}


def assert_weights(actual: dict, reference: dict) -> None:
    assert sorted(actual) == sorted(reference)
    for key in reference:
        torch.testing.assert_close(actual[key], reference[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize(("node", "inputs", "a", "b"), [
    ("ModelMergeSimple", {"ratio": 0.3}, 0.3, 0.7),
    ("ModelMergeSubtract", {"multiplier": 0.5}, 0.5, -0.5),
    ("ModelMergeAdd", {}, 1.0, 1.0),
])
def test_model_merges_are_comfyuis_weight_arithmetic(runner, node, inputs, a, b):
    unet1, unet2 = tiny_sd1(0).unet, tiny_sd1(1).unet
    weights = merged_weights(runner, merge_prompt(node, model1=["1", 0], model2=["2", 0], **inputs))
    assert_weights(weights, expected(a, b, unet1, unet2))


def test_model_merge_blocks_uses_a_ratio_per_unet_part(runner):
    """The reference classifies weights by their diffusers names: down blocks, conv_in and the embeddings are the
    original layout's input side (ComfyUI's default ratio is `input`'s), mid_block the middle, up blocks and the
    final norm / conv the output side."""
    unet1, unet2 = tiny_sd1(0).unet, tiny_sd1(1).unet
    ratios = {"input": 0.2, "middle": 0.5, "out": 0.9}
    weights = merged_weights(runner, merge_prompt("ModelMergeBlocks", model1=["1", 0], model2=["2", 0], **ratios))
    s1, s2 = unet1.state_dict(), unet2.state_dict()
    reference = {}
    for key, value in s1.items():
        part = ("middle" if key.startswith("mid_block.") else
                "out" if key.startswith(("up_blocks.", "conv_norm_out.", "conv_out.")) else "input")
        reference[key] = ratios[part] * value + (1 - ratios[part]) * s2[key]
    assert_weights(weights, reference)


def test_clip_merge_simple_averages_the_text_encoders(runner):
    enc1, enc2 = tiny_sd1(0).text_encoders[0], tiny_sd1(1).text_encoders[0]
    weights = merged_weights(runner, merge_prompt("CLIPMergeSimple", clip1=["1", 1], clip2=["2", 1], ratio=0.25))
    assert_weights(weights["l"], expected(0.25, 0.75, enc1, enc2, skip=(".position_ids",)))


def test_merged_model_samples_and_ratio_one_is_model1(runner):
    def image(ratio: float):
        prompt = merge_prompt("ModelMergeSimple", model1=["1", 0], model2=["2", 0], ratio=ratio)
        return image_of(runner.run(txt2img_from(["3", 0], ["1", 1], ["1", 2], prompt)))

    assert torch.equal(image(1.0), ckpt_image(runner, "tiny_sd1.safetensors"))
    assert not torch.equal(image(0.5), image(1.0))


def test_merging_different_architectures_fails_in_the_merge_node(runner):
    prompt = {**checkpoint("tiny_sd1.safetensors"),
              "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sdxl.safetensors"}},
              "3": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["2", 0], "ratio": 0.5}},
              "4": {"class_type": "ModelSave", "inputs": {"model": ["3", 0], "filename_prefix": "diffusion_models/x"}}}
    run = runner.run(prompt)
    assert run.status == "error" and run.error["node_id"] == "3"
    assert "different architectures" in run.error["exception_message"]


# --- saves round-trip through the loaders -------------------------------------------------------------------------


def test_checkpoint_save_round_trips_through_load_checkpoint(runner, tmp_path):
    prompt = {**checkpoint("tiny_sd1.safetensors"),
              "2": {"class_type": "CheckpointSave", "inputs": {
                  "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/saved"}}}
    run = runner.run(prompt, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert run.status == "success", run.error
    path = tmp_path / "output" / "checkpoints" / "saved_00001_.safetensors"
    loaded, built = read_checkpoint_file(path), tiny_sd1(0)
    for a, b in zip(loaded.models(), built.models(), strict=True):
        assert_same_weights(a, b)
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["prompt"])["2"]["class_type"] == "CheckpointSave"
    assert json.loads(metadata["workflow"]) == {"nodes": []}
    assert metadata["modelspec.predict_key"] == "epsilon"
    # the saved file is listed (output/ is a models root here) and gives the same image
    assert torch.equal(ckpt_image(runner, "saved_00001_.safetensors"), ckpt_image(runner, "tiny_sd1.safetensors"))


def test_saved_merge_reloads_as_the_merge(runner, tmp_path):
    prompt = merge_prompt("ModelMergeSimple", model1=["1", 0], model2=["2", 0], ratio=0.4)
    prompt["4"] = {"class_type": "CheckpointSave", "inputs": {
        "model": ["3", 0], "clip": ["1", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/merged"}}
    assert runner.run(prompt).status == "success"
    loaded = read_checkpoint_file(tmp_path / "output" / "checkpoints" / "merged_00001_.safetensors")
    reference = expected(0.4, 0.6, tiny_sd1(0).unet, tiny_sd1(1).unet)
    assert_weights(loaded.unet.state_dict(), reference)


def test_clip_vae_and_model_saves_round_trip_through_the_component_loaders(runner, tmp_path):
    prompt = {
        **checkpoint("tiny_sdxl.safetensors"),
        "2": {"class_type": "CLIPSave", "inputs": {"clip": ["1", 1], "filename_prefix": "clip/xl"}},
        "3": {"class_type": "VAESave", "inputs": {"vae": ["1", 2], "filename_prefix": "vae/xl"}},
        "4": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "diffusion_models/xl"}},
    }
    run = runner.run(prompt)
    assert run.status == "success", run.error
    out = tmp_path / "output"
    written = sorted(p.name for p in (out / "clip").iterdir())
    assert written == ["xl_clip_g_00001_.safetensors", "xl_clip_l_00001_.safetensors"]
    with safe_open(str(out / "clip" / "xl_clip_l_00001_.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt"
    loaders = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "xl_00001_.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "xl_clip_l_00001_.safetensors", "clip_name2": "xl_clip_g_00001_.safetensors",
            "type": "sdxl"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "xl_00001_.safetensors"}},
    }
    reloaded = image_of(runner.run(txt2img_from(["1", 0], ["2", 0], ["3", 0], loaders)))
    assert torch.equal(reloaded, ckpt_image(runner, "tiny_sdxl.safetensors"))


def test_clip_save_of_sd1_reloads_with_clip_loader(runner, tmp_path):
    prompt = {**checkpoint("tiny_sd1.safetensors"),
              "2": {"class_type": "CLIPSave", "inputs": {"clip": ["1", 1], "filename_prefix": "clip/one"}}}
    assert runner.run(prompt).status == "success"
    loaded = read_text_encoder_file(tmp_path / "output" / "clip" / "one_clip_l_00001_.safetensors")
    assert_same_weights(loaded.model, tiny_sd1(0).text_encoders[0])


def test_save_prefix_must_stay_inside_the_output_folder(runner):
    prompt = {**checkpoint("tiny_sd1.safetensors"),
              "2": {"class_type": "VAESave", "inputs": {"vae": ["1", 2], "filename_prefix": "../outside/x"}}}
    result = runner.validate(prompt)
    assert not result.ok and "2" in result.node_errors


@pytest.mark.parametrize("name", ["tiny_sd2", "tiny_sdxl_refiner"])
def test_sd2_and_refiner_parts_saved_and_reloaded_equal_the_checkpoint(runner, name):
    """SD2 (OpenCLIP-H, v-prediction) and the SDXL refiner (bigG alone): ModelSave + CLIPSave, then UNETLoader +
    CLIPLoader(stable_diffusion) pick the family from the files."""
    saves = {**checkpoint(f"{name}.safetensors"),
             "2": {"class_type": "CLIPSave", "inputs": {"clip": ["1", 1], "filename_prefix": f"clip/{name}"}},
             "3": {"class_type": "ModelSave",
                   "inputs": {"model": ["1", 0], "filename_prefix": f"diffusion_models/{name}"}}}
    assert runner.run(saves).status == "success"
    kind = "h" if name == "tiny_sd2" else "g"
    loaders = {**checkpoint(f"{name}.safetensors"),
               "2": {"class_type": "UNETLoader",
                     "inputs": {"unet_name": f"{name}_00001_.safetensors", "weight_dtype": "default"}},
               "3": {"class_type": "CLIPLoader",
                     "inputs": {"clip_name": f"{name}_clip_{kind}_00001_.safetensors", "type": "stable_diffusion"}}}
    run = runner.run(txt2img_from(["2", 0], ["3", 0], ["1", 2], loaders))
    assert run.values["2"][0].family == {"tiny_sd2": "sd2", "tiny_sdxl_refiner": "sdxl_refiner"}[name]
    prediction = run.values["2"][0].scheduler_config["prediction_type"]
    assert prediction == ("v_prediction" if name == "tiny_sd2" else "epsilon")
    assert torch.equal(image_of(run), ckpt_image(runner, f"{name}.safetensors"))


def test_unet_family_probe_and_unknown_unet_files(tmp_path, models_root):
    sd2 = {k: s for k, s in real_layout_shapes("sd2").items() if k.startswith("model.diffusion_model.")}
    spread = lambda key: torch.linspace(-1, 1, 320)  # noqa: E731  (std 0.58: the v-prediction releases' signature)
    assert detect_unet_family(sd2, spread).name == "sd2"
    # a tiny UNet without our header has no family's shapes: refused with what it holds and what is supported
    with safe_open(str(models_root / "diffusion_models" / "tiny_sd1_unet.safetensors"), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    bare = tmp_path / "unknown.safetensors"
    save_file(state, str(bare))
    with pytest.raises(ValueError, match="not a diffusion model .* supported family"):
        read_unet_file(bare)


def test_split_sdxl_takes_loras_and_embeddings_like_the_checkpoint(runner):
    """LoraLoader patches UNETLoader's MODEL and DualCLIPLoader's CLIP as it patches a checkpoint's, and the
    split CLIP finds `embedding:name` in the embeddings folder."""
    def with_lora(model, clip, loaders):
        prompt = txt2img_from(["9", 0], ["9", 1], ["3", 0] if "3" in loaders else ["1", 2], loaders)
        prompt["9"] = {"class_type": "LoraLoader", "inputs": {
            "model": model, "clip": clip, "lora_name": "tiny_lora_sdxl_kohya.safetensors",
            "strength_model": 0.8, "strength_clip": 0.6}}
        prompt["20"]["inputs"]["text"] = "a embedding:tiny_embedding_sdxl square"
        return prompt

    split = {
        "1": {"class_type": "UNETLoader",
              "inputs": {"unet_name": "tiny_sdxl_unet.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "tiny_sdxl_clip_l.safetensors", "clip_name2": "tiny_sdxl_clip_g.safetensors",
            "type": "sdxl"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_sdxl_vae.safetensors"}},
    }
    a = image_of(runner.run(with_lora(["1", 0], ["2", 0], split)))
    b = image_of(runner.run(with_lora(["1", 0], ["1", 1], checkpoint("tiny_sdxl.safetensors"))))
    assert torch.equal(a, b)
    assert not torch.equal(a, ckpt_image(runner, "tiny_sdxl.safetensors"))


def test_v_prediction_checkpoint_save_is_marked_and_reloads(runner, tmp_path):
    from nodegraph_nodes.diffusion.tiny import tiny_sd2

    prompt = {**checkpoint("tiny_sd2.safetensors"),
              "2": {"class_type": "CheckpointSave", "inputs": {
                  "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/v"}}}
    assert runner.run(prompt).status == "success"
    path = tmp_path / "output" / "checkpoints" / "v_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        assert "v_pred" in f.keys() and f.metadata()["modelspec.predict_key"] == "v"
    loaded, built = read_checkpoint_file(path), tiny_sd2(0)
    assert loaded.family == "sd2" and loaded.scheduler_config["prediction_type"] == "v_prediction"
    for a, b in zip(loaded.models(), built.models(), strict=True):
        assert_same_weights(a, b)
