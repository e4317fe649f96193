"""A ControlNet published as the lone weights file of a diffusers ControlNetModel (diffusers keys, no config beside
it) loads through the ControlNetLoader node for SD1 and SDXL shapes of any size, its architecture read off the
tensor shapes, and computes what the original ControlNetModel computes."""
from __future__ import annotations

import inspect
import shutil

import pytest
import torch
from diffusers import ControlNetModel

from nodegraph.engine import Folders, Runtime
from nodegraph.engine.node import NodeContext
from nodegraph_nodes.diffusion.controlnet_shapes import ControlNetShapeError, controlnet_config_from_shapes
from nodegraph_nodes.diffusion.families import bundled_config
from nodegraph_nodes.diffusion.checkpoint_files import CheckpointError, read_controlnet_file
from nodegraph_nodes.diffusion.cache_readers import model_cache
from nodegraph_nodes.sd.controlnet import ControlNetLoader
from support.models import real_controlnet_shapes

# Two SD1-shaped ControlNets (SD1's conv projections, 8 heads) and two SDXL-shaped ones (linear projections, 64
# channels per head, text_time conditioning with several transformer layers per block), none of a published size.
SD1_SHAPED = {
    "block_out_channels": [32, 64], "layers_per_block": 2, "cross_attention_dim": 24, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "conditioning_embedding_out_channels": [8, 16],
}
SD1_SHAPED_DEEPER = {
    "block_out_channels": [32, 64, 64], "layers_per_block": 1, "cross_attention_dim": 40, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "conditioning_embedding_out_channels": [4, 8, 8], "conditioning_channels": 1,
}
SDXL_SHAPED = {
    "block_out_channels": [64, 128], "layers_per_block": 2, "cross_attention_dim": 80, "attention_head_dim": [1, 2],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "transformer_layers_per_block": [1, 2],
    "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 48 + 6 * 8, "conditioning_embedding_out_channels": [8, 16, 32],
}
SDXL_SHAPED_WIDE_TIME = {  # SDXL's own 256-wide time-id embeddings with a small pooled width
    **SDXL_SHAPED, "projection_class_embeddings_input_dim": 16 + 6 * 256, "addition_time_embed_dim": 256,
    "transformer_layers_per_block": [1, 3], "layers_per_block": 1,
}
CASES = {"sd1": SD1_SHAPED, "sd1_deeper": SD1_SHAPED_DEEPER, "sdxl": SDXL_SHAPED, "sdxl_wide_time": SDXL_SHAPED_WIDE_TIME}


def _random_controlnet(config: dict, seed: int) -> ControlNetModel:
    """A diffusers ControlNetModel with every weight random (its zero-initialised output convs included)."""
    torch.manual_seed(seed)
    model = ControlNetModel(**config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Each case saved with diffusers' save_pretrained, then its weights file alone copied into controlnet/."""
    root = tmp_path_factory.mktemp("cn")
    models = root / "models"
    (models / "controlnet").mkdir(parents=True)
    originals = {}
    for i, (name, config) in enumerate(CASES.items()):
        original = _random_controlnet(config, seed=i)
        original.save_pretrained(root / "saved" / name)
        shutil.copy(root / "saved" / name / "diffusion_pytorch_model.safetensors",
                    models / "controlnet" / f"{name}.safetensors")
        originals[name] = original
    folders = Folders(models_dirs=[models], input_dir=root / "in", output_dir=root / "out", temp_dir=root / "tmp",
                      settings={"device": "cpu", "precision": "fp32"})
    return folders, originals


def _inputs(config: dict, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    hint = 8 * 2 ** (len(config["conditioning_embedding_out_channels"]) - 1)
    kwargs = {
        "sample": torch.randn(2, 4, 8, 8, generator=generator),
        "timestep": torch.tensor([700.0, 35.0]),
        "encoder_hidden_states": torch.randn(2, 7, config["cross_attention_dim"], generator=generator),
        # the hint encoder halves the size between its widths: the hint is that much larger than the latent
        "controlnet_cond": torch.rand(2, config.get("conditioning_channels", 3), hint, hint, generator=generator),
        "conditioning_scale": 0.9,
        "return_dict": False,
    }
    if config.get("addition_embed_type") == "text_time":
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, pooled, generator=generator),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64], [96, 80, 8, 4, 64, 64]]),
        }
    return kwargs


@pytest.mark.parametrize("name", list(CASES))
def test_loader_node_loads_a_diffusers_weights_file_and_matches_the_original(published, name):
    folders, originals = published
    node = ControlNetLoader()
    node.context = NodeContext(node_id="1", prompt_id="test", runtime=Runtime(folders))
    (handle,) = node.execute(control_net_name=f"{name}.safetensors")
    assert handle.family == ("sdxl" if "sdxl" in name else "sd1")
    original = originals[name]
    with model_cache(node.context.runtime).use(handle.ref) as loaded, torch.no_grad():
        for key in ("block_out_channels", "layers_per_block", "cross_attention_dim", "use_linear_projection",
                    "transformer_layers_per_block", "addition_time_embed_dim", "conditioning_channels",
                    "conditioning_embedding_out_channels", "down_block_types"):
            expected = original.config[key]
            if key == "transformer_layers_per_block" and isinstance(expected, int):  # one int for every block
                expected = [expected] * len(original.config["block_out_channels"])
            assert _plain(loaded.config[key]) == _plain(expected), key
        inputs = _inputs(original.config, seed=5)
        down_theirs, mid_theirs = original(**inputs)
        down_ours, mid_ours = loaded(**inputs)
    assert len(down_ours) == len(down_theirs)
    for ours, theirs in zip([*down_ours, mid_ours], [*down_theirs, mid_theirs], strict=True):
        assert theirs.abs().max() > 0.1  # the comparison is not between zeros
        assert (ours - theirs).abs().max() <= 1e-6


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("folder", ["controlnet_sd15", "controlnet_sdxl"])
def test_published_sizes_give_the_bundled_configs(folder):
    """On the real SD1.5 / SDXL ControlNet shapes, the inferred config is the published one."""
    inferred = controlnet_config_from_shapes(real_controlnet_shapes(folder, original_layout=False))
    defaults = {k: p.default for k, p in inspect.signature(ControlNetModel.__init__).parameters.items()}
    bundled = {**defaults, **bundled_config(folder, "")}
    for key, value in inferred.items():
        if key == "attention_head_dim" and isinstance(bundled[key], int):
            assert set(value) == {bundled[key]}
        elif key == "transformer_layers_per_block" and isinstance(bundled[key], int):
            assert set(value) == {bundled[key]}
        else:
            assert _plain(value) == _plain(bundled[key]), key


def test_heads_that_the_convention_cannot_give_are_refused_clearly(tmp_path):
    """A linear-projection ControlNet whose attention width is not a multiple of 64 has an unknowable head count."""
    config = {**SDXL_SHAPED, "block_out_channels": [32, 96]}
    model = _random_controlnet(config, seed=3)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with pytest.raises(ControlNetShapeError, match="64 channels per head, and block 1 has 96 channels"):
        controlnet_config_from_shapes(shapes)
    model.save_pretrained(tmp_path / "odd")
    with pytest.raises(CheckpointError, match="a ControlNet with diffusers keys, but the number of attention heads"):
        read_controlnet_file(tmp_path / "odd" / "diffusion_pytorch_model.safetensors")
