"""read_checkpoint_file / read_vae_file / read_controlnet_file on every format, their refusals, and make_tiny_models."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from support.models import assert_same_weights
from nodegraph_nodes.diffusion.checkpoint_files import (
    CheckpointError,
    read_checkpoint_file,
    read_controlnet_file,
    read_vae_file,
)
from nodegraph_testmodels.files import make_tiny_models
from nodegraph_nodes.diffusion.tiny import TINY_VAE, build_vae, tiny_controlnet, tiny_sd1, tiny_sdxl


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_make_tiny_models_layout(tiny_models_root):
    names = {k: Path(v) for k, v in tiny_models_root.items()}
    assert names["tiny_sd1"].name == "tiny_sd1.safetensors" and names["tiny_sd1"].parent.name == "checkpoints"
    assert (names["tiny_sdxl_diffusers"] / "model_index.json").is_file()
    assert (names["tiny_sdxl_diffusers"] / "tokenizer_2").is_dir()
    assert names["tiny_controlnet_sd1"].parent.name == "controlnet"
    assert (names["tiny_controlnet_sd1_diffusers"] / "config.json").is_file()
    assert names["tiny_vae"].parent.name == "vae"
    assert {names[n].parent.name for n in ("tiny_lora_sd1_kohya", "tiny_lora_sd1_diffusers", "tiny_lora_sdxl_kohya",
                                           "tiny_lora_sd1_kohya_pt")} == {"loras"}
    assert {names[n].name for n in ("tiny_embedding", "tiny_embedding_a1111_pt", "tiny_embedding_sdxl")} == {
        "tiny_embedding.safetensors", "tiny_embedding_a1111.pt", "tiny_embedding_sdxl.safetensors"}


def test_make_tiny_models_is_deterministic(tmp_path, tiny_models_root):
    root = Path(tiny_models_root["tiny_vae"]).parent.parent
    again = make_tiny_models(tmp_path)
    assert tree_digest(Path(again["tiny_vae"]).parent.parent) == tree_digest(root)


def test_single_file_and_folder_load_the_same_models(tiny_models_root, no_network):
    for name in ("tiny_sd1", "tiny_sdxl", "tiny_sdxl_refiner"):
        single = read_checkpoint_file(tiny_models_root[name])
        folder = read_checkpoint_file(tiny_models_root[name + "_diffusers"])
        assert single.family == folder.family
        for a, b in zip(single.models(), folder.models(), strict=True):
            assert_same_weights(a, b)
        prompt = "a photo of a cat"
        assert [t(prompt).input_ids for t in single.tokenizers] == [t(prompt).input_ids for t in folder.tokenizers]
        assert single.scheduler_config == folder.scheduler_config
    assert no_network == []


def test_loaded_sd1_equals_the_builder_and_runs(tiny_models_root):
    loaded, built = read_checkpoint_file(tiny_models_root["tiny_sd1"]), tiny_sd1(0)
    for a, b in zip(loaded.models(), built.models(), strict=True):
        assert_same_weights(a, b)
    ids = loaded.tokenizers[0]("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        context = loaded.text_encoders[0](ids).last_hidden_state
        out = loaded.unet(torch.zeros(1, 4, 8, 8), 500, context).sample
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_controlnet_and_vae_files_and_folders(tiny_models_root, no_network):
    expected = tiny_controlnet(tiny_sd1(0).unet, 0)
    assert_same_weights(read_controlnet_file(tiny_models_root["tiny_controlnet_sd1"]), expected)
    assert_same_weights(read_controlnet_file(tiny_models_root["tiny_controlnet_sd1_diffusers"]), expected)
    assert_same_weights(read_vae_file(tiny_models_root["tiny_vae"]), build_vae(TINY_VAE, 7))
    assert_same_weights(read_vae_file(tiny_models_root["tiny_sd1_diffusers"]), tiny_sd1(0).vae)
    assert no_network == []


def test_controlnet_with_diffusers_keys_in_one_file(tmp_path):
    controlnet = tiny_controlnet(tiny_sd1(2).unet, 2)
    header = {"nodegraph.config": '{"kind": "controlnet", "controlnet": ' + controlnet.to_json_string() + "}"}
    path = tmp_path / "cn.safetensors"
    save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, str(path), metadata=header)
    assert_same_weights(read_controlnet_file(path), controlnet)


def test_vae_from_a_full_checkpoint_file(tiny_models_root):
    assert_same_weights(read_vae_file(tiny_models_root["tiny_sdxl"]), tiny_sdxl(0).vae)


def test_dtype_cast(tiny_models_root):
    loaded = read_checkpoint_file(tiny_models_root["tiny_sd1"], dtype=torch.float16)
    assert {p.dtype for m in loaded.models() for p in m.parameters()} == {torch.float16}


def test_pickled_checkpoints_are_refused_unless_allowed(tmp_path, tiny_models_root):
    state = load_file(tiny_models_root["tiny_sd1"])
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"is a pickle.*Convert it to \.safetensors"):
        read_checkpoint_file(path)
    with pytest.raises(CheckpointError, match="is a pickle"):
        read_vae_file(path)
    # no header in a pickle: the tiny shapes fit no real family, and the error says what was found
    with pytest.raises(CheckpointError, match=r"not a checkpoint of a supported family.*model\.diffusion_model"):
        read_checkpoint_file(path, allow_pickle=True)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".sft"])
def test_safetensors_content_loads_under_any_extension(tmp_path, tiny_models_root, suffix):
    for name, load in (("tiny_sd1", read_checkpoint_file), ("tiny_controlnet_sd1", read_controlnet_file), ("tiny_vae", read_vae_file)):
        renamed = tmp_path / (name + suffix)
        renamed.write_bytes(Path(tiny_models_root[name]).read_bytes())
        loaded, original = load(renamed), load(tiny_models_root[name])
        for a, b in zip(getattr(loaded, "models", lambda: [loaded])(), getattr(original, "models", lambda: [original])(),
                        strict=True):
            assert_same_weights(a, b)


@pytest.mark.parametrize("zipped", [True, False])
def test_pickle_content_named_safetensors_is_refused_by_content(tmp_path, tiny_models_root, zipped):
    path = tmp_path / "disguised.safetensors"
    torch.save(load_file(tiny_models_root["tiny_sd1"]), path, _use_new_zipfile_serialization=zipped)
    for load in (read_checkpoint_file, read_vae_file, read_controlnet_file):
        with pytest.raises(CheckpointError, match=r"disguised\.safetensors: this file is a pickle"):
            load(path)


def test_truncated_safetensors_is_explained(tmp_path, tiny_models_root):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(Path(tiny_models_root["tiny_sd1"]).read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated safetensors file"):
        read_checkpoint_file(path)


class NotATensor:
    """Something a pickle can carry besides tensors: weights_only loading must refuse it."""


def test_pickles_with_objects_are_refused_even_when_allowed(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint_file(path, allow_pickle=True)


def test_wrong_kinds_and_formats_are_explained(tmp_path, tiny_models_root):
    with pytest.raises(CheckpointError, match="controlnet file, not a checkpoint"):
        read_checkpoint_file(tiny_models_root["tiny_controlnet_sd1"])
    with pytest.raises(CheckpointError, match="checkpoint file, not a ControlNet"):
        read_controlnet_file(tiny_models_root["tiny_sd1"])
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="neither safetensors nor a torch pickle"):
        read_checkpoint_file(other)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint_file(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="model_index.json"):
        read_checkpoint_file(tmp_path)


def test_truncated_checkpoint_names_the_missing_tensors(tmp_path, tiny_models_root):
    from safetensors import safe_open

    with safe_open(str(tiny_models_root["tiny_sd1"]), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(tiny_models_root["tiny_sd1"])
    del state["model.diffusion_model.out.2.weight"]
    path = tmp_path / "truncated.safetensors"
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"unet weights do not fit its config: 1 missing.*conv_out\.weight"):
        read_checkpoint_file(path)
