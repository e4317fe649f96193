"""diffusers -> original layout -> our loader gives back the same tensors, and agrees with diffusers' own loader."""
from __future__ import annotations

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from safetensors import safe_open

from nodegraph_nodes.diffusion import keymap
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file, read_controlnet_file, read_vae_file, write_diffusers_folder
from nodegraph_nodes.diffusion.tiny import tiny_controlnet, tiny_refiner, tiny_sd1, tiny_sd2, tiny_sdxl
from support.models import assert_same_weights

BUILDERS = {"sd1": tiny_sd1, "sd2": tiny_sd2, "sdxl": tiny_sdxl, "sdxl_refiner": tiny_refiner}
PIPELINES = {
    "sd1": StableDiffusionPipeline,
    "sd2": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
    "sdxl_refiner": StableDiffusionXLImg2ImgPipeline,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each tiny family in memory, as an original-layout file and as a diffusers folder (configs for diffusers)."""
    root = tmp_path_factory.mktemp("keymap")
    out = {}
    for name, build in BUILDERS.items():
        components = build(seed=3)
        out[name] = (
            components,
            keymap.write_single_file(components, root / f"{name}.safetensors"),
            write_diffusers_folder(components, root / name),
        )
    return out


def file_keys(path):
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("family", list(BUILDERS))
def test_round_trip_is_bit_exact(built, family):
    components, path, _ = built[family]
    loaded = read_checkpoint_file(path)
    assert loaded.family == family
    assert_same_weights(loaded.unet, components.unet)
    assert_same_weights(loaded.vae, components.vae)
    assert len(loaded.text_encoders) == len(components.text_encoders)
    for got, want in zip(loaded.text_encoders, components.text_encoders):
        assert type(got) is type(want)
        assert_same_weights(got, want)
    assert [len(t) for t in loaded.tokenizers] == [len(t) for t in components.tokenizers]
    assert [t.pad_token for t in loaded.tokenizers] == [t.pad_token for t in components.tokenizers]
    assert loaded.scheduler_config == components.scheduler_config


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_single_file_load_equals_diffusers_from_single_file(built, family):
    """diffusers reads our file with the tiny configs and gets exactly what our loader gets."""
    _, path, folder = built[family]
    ours = read_checkpoint_file(path)
    pipe = PIPELINES[family].from_single_file(str(path), config=str(folder), local_files_only=True)
    assert_same_weights(ours.unet, pipe.unet)
    assert_same_weights(ours.vae, pipe.vae)
    theirs = [e for e in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if e is not None]
    assert len(theirs) == len(ours.text_encoders)
    for got, want in zip(ours.text_encoders, theirs):
        assert_same_weights(got, want)


def test_original_layout_uses_the_checkpoint_prefixes_and_names(built):
    sd1_keys = file_keys(built["sd1"][1])
    assert "model.diffusion_model.input_blocks.0.0.weight" in sd1_keys
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in sd1_keys
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in sd1_keys  # downsampler after 2 layers
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in sd1_keys  # upsampler of an UpBlock2D
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in sd1_keys
    assert "first_stage_model.decoder.up.3.block.0.conv1.weight" in sd1_keys
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in sd1_keys
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in sd1_keys
    sdxl_keys = file_keys(built["sdxl"][1])
    assert "model.diffusion_model.label_emb.0.0.weight" in sdxl_keys
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in sdxl_keys  # upsampler after an attention
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in sdxl_keys
    assert "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight" in sdxl_keys
    assert "conditioner.embedders.1.model.text_projection" in sdxl_keys
    assert "conditioner.embedders.0.model.positional_embedding" in file_keys(built["sdxl_refiner"][1])
    assert "cond_stage_model.model.ln_final.weight" in file_keys(built["sd2"][1])


def test_open_clip_projection_is_transposed_and_qkv_fused():
    encoder = tiny_sdxl(seed=1).text_encoders[1]
    original = keymap.open_clip_to_original(encoder.state_dict())
    assert torch.equal(original["text_projection"], encoder.text_projection.weight.T)
    attn = encoder.text_model.encoder.layers[0].self_attn
    fused = original["transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(fused, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))


def test_vae_mid_attention_becomes_1x1_convolutions():
    vae = tiny_sd1(seed=1).vae
    original = keymap.vae_to_original(vae.state_dict(), vae.config)
    q = vae.decoder.mid_block.attentions[0].to_q.weight
    assert original["decoder.mid.attn_1.q.weight"].shape == (*q.shape, 1, 1)
    assert torch.equal(original["decoder.mid.attn_1.q.weight"][:, :, 0, 0], q)


@pytest.mark.parametrize("base", ["sd1", "sdxl"])
def test_controlnet_round_trip_and_diffusers_agreement(built, tmp_path, base):
    controlnet = tiny_controlnet(built[base][0].unet, seed=5)
    family = "controlnet_" + base
    path = keymap.write_controlnet_file(controlnet, tmp_path / f"{family}.safetensors", family=family)
    keys = file_keys(path)
    assert {"control_model.input_hint_block.14.weight", "control_model.zero_convs.0.0.weight",
            "control_model.middle_block_out.0.weight"} <= keys
    loaded = read_controlnet_file(path)
    assert_same_weights(loaded, controlnet)
    if base == "sd1":  # diffusers' converter leaves SDXL's label_emb out of original-layout ControlNets
        controlnet.save_pretrained(tmp_path / "config")
        theirs = ControlNetModel.from_single_file(str(path), config=str(tmp_path / "config"), local_files_only=True)
        assert_same_weights(loaded, theirs)


def test_standalone_vae_round_trip_and_diffusers_agreement(built, tmp_path):
    vae = tiny_sd1(seed=9).vae
    path = keymap.write_vae_file(vae, tmp_path / "vae.safetensors")
    assert "encoder.down.0.block.0.conv1.weight" in file_keys(path)
    loaded = read_vae_file(path)
    assert_same_weights(loaded, vae)
    theirs = AutoencoderKL.from_single_file(
        str(path), config=str(built["sd1"][2]), subfolder="vae", local_files_only=True
    )
    assert_same_weights(loaded, theirs)
