"""Family recognition: on real-size key/shape sets (built on the meta device) and on our tiny files."""
from __future__ import annotations

import pytest
import torch

from support.models import real_controlnet_shapes, real_layout_shapes
from nodegraph_nodes.diffusion.families import (
    FAMILIES,
    bundled_json,
    describe_keys,
    detect_controlnet_family,
    detect_family,
    detect_folder_family,
)
from nodegraph_nodes.diffusion.checkpoint_files import SingleFile

SD2_PROBE = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"


@pytest.fixture(scope="module")
def real_shapes():
    return {name: real_layout_shapes(name) for name in ("sd1", "sd2", "sdxl", "sdxl_refiner")}


def values_with_std(std: float):
    """A tensor source for value rules: every tensor drawn with the given spread."""
    generator = torch.Generator().manual_seed(0)
    return lambda key: torch.randn(320, generator=generator) * std


def test_real_sizes_of_the_bundled_configs(real_shapes):
    sd1 = real_shapes["sd1"]
    assert sd1["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert sd1["first_stage_model.encoder.down.3.block.1.conv2.weight"] == (512, 512, 3, 3)
    assert sd1["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] == (49408, 768)
    sdxl = real_shapes["sdxl"]
    assert sdxl["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert sdxl["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert sdxl["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight" in sdxl
    assert real_shapes["sdxl_refiner"]["model.diffusion_model.label_emb.0.0.weight"] == (1536, 2560)


@pytest.mark.parametrize("name", ["sd1", "sdxl", "sdxl_refiner"])
def test_real_layouts_are_recognised(real_shapes, name):
    assert detect_family(real_shapes[name]).name == name


def test_sd1_files_without_the_text_model_level_are_recognised(real_shapes):
    legacy = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): s
              for k, s in real_shapes["sd1"].items()}
    assert detect_family(legacy).name == "sd1"


def test_sd2_prediction_type_follows_the_v_prediction_probe(real_shapes):
    shapes = real_shapes["sd2"]
    assert SD2_PROBE in shapes
    v_model = detect_family(shapes, values_with_std(0.2))
    eps_model = detect_family(shapes, values_with_std(0.01))
    assert (v_model.name, v_model.prediction_type, v_model.default_resolution) == ("sd2", "v_prediction", 768)
    assert (eps_model.name, eps_model.prediction_type, eps_model.default_resolution) == ("sd2_base", "epsilon", 512)
    assert eps_model.config("scheduler")["prediction_type"] == "epsilon"
    assert eps_model.config("unet")["cross_attention_dim"] == 1024


def test_inpainting_is_recognised_and_unknown_layouts_are_not_guessed(real_shapes):
    inpainting = dict(real_shapes["sd1"])
    inpainting["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)
    assert detect_family(inpainting).name == "sd1"  # 9 input channels: the inpainting variant (test_inpaint.py)
    other = dict(inpainting)
    other["model.diffusion_model.input_blocks.0.0.weight"] = (320, 8, 3, 3)
    assert detect_family(other) is None
    assert detect_family({"transformer.blocks.0.weight": (8, 8)}) is None
    unet_only = {k: s for k, s in real_shapes["sdxl"].items() if k.startswith("model.diffusion_model.")}
    assert detect_family(unet_only) is None
    summary = describe_keys(inpainting)
    assert "model.diffusion_model.* (" in summary and "input_blocks.0.0.weight [320, 9, 3, 3]" in summary


@pytest.mark.parametrize("original_layout", [True, False])
@pytest.mark.parametrize(("folder", "name"), [("controlnet_sd15", "controlnet_sd1"), ("controlnet_sdxl", "controlnet_sdxl")])
def test_real_controlnets_are_recognised_in_both_layouts(folder, name, original_layout):
    shapes = real_controlnet_shapes(folder, original_layout)
    assert detect_controlnet_family(shapes).name == name
    unprefixed = {k.removeprefix("control_model."): s for k, s in shapes.items()}
    assert detect_controlnet_family(unprefixed).name == name
    assert detect_family(shapes) is None


def test_family_settings():
    assert FAMILIES["sd1"].latent_scale == 0.18215 and FAMILIES["sdxl"].latent_scale == 0.13025
    assert [s.hidden_layer for s in FAMILIES["sdxl"].text_encoders] == [-2, -2]
    assert [s.with_projection for s in FAMILIES["sdxl"].text_encoders] == [False, True]
    assert (FAMILIES["sdxl"].time_ids, FAMILIES["sdxl_refiner"].time_ids, FAMILIES["sd1"].time_ids) == (6, 5, 0)
    for family in FAMILIES.values():
        assert family.config("vae")["scaling_factor"] == family.latent_scale
        assert family.config("scheduler")["prediction_type"] == family.prediction_type
        assert family.config("unet")["sample_size"] * 8 == family.default_resolution
        for spec in family.text_encoders:
            # the pooled output is read at the EOS id, so configs carry the real tokenizer's ids
            assert family.config(spec.subfolder)["eos_token_id"] == 49407


@pytest.mark.parametrize("name", ["sd1", "sd2", "sd2_base", "sdxl", "sdxl_refiner"])
def test_bundled_folders_are_recognised_as_diffusers_folders(name):
    family = FAMILIES[name]
    configs = {
        "model_index": bundled_json(family.config_folder, "model_index.json"),
        "unet": family.config("unet"),
        "scheduler": family.config("scheduler"),
    }
    assert detect_folder_family(configs) is family


def test_tiny_files_name_their_family_in_the_header(tiny_models_root):
    for name in ("sd1", "sdxl", "sdxl_refiner"):
        header = SingleFile(tiny_models_root["tiny_" + name]).header()
        assert header["kind"] == "checkpoint" and header["family"] == name
        # without the header, the tiny shapes match no real family rather than a wrong one
        assert detect_family(SingleFile(tiny_models_root["tiny_" + name]).shapes) is None
    assert SingleFile(tiny_models_root["tiny_controlnet_sd1"]).header()["kind"] == "controlnet"
    assert SingleFile(tiny_models_root["tiny_vae"]).header()["kind"] == "vae"
