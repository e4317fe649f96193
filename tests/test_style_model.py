"""T2I-Adapter style models: the file layout, the forward pass against ComfyUI's StyleAdapter formula written out
here (sequence-first attention with q, k, v split from the stacked projection, 8 heads, quick-GELU MLP), and
StyleModelApply's token count and strength semantics, derived by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nodegraph_nodes.diffusion import style_model as sm
from nodegraph_nodes.diffusion.conditioning import Conditioning


@pytest.fixture(scope="module")
def tiny():
    return sm.tiny_style_model(seed=3)


def _reference(state, hidden, heads=8):
    """ComfyUI's StyleAdapter.forward, from the file's tensors: [B, L, w] -> [B, tokens, context]."""
    tokens = state["style_embedding"].shape[1]
    x = torch.cat([hidden, state["style_embedding"].expand(hidden.shape[0], -1, -1)], dim=1)
    ln = lambda t, p: F.layer_norm(t, t.shape[-1:], state[p + ".weight"], state[p + ".bias"])  # noqa: E731
    x = ln(x, "ln_pre").permute(1, 0, 2)  # NLD -> LND, as ComfyUI
    i = 0
    while f"transformer_layes.{i}.ln_1.weight" in state:
        p = f"transformer_layes.{i}."
        h = ln(x, p + "ln_1")
        q, k, v = (h @ w.T + b for w, b in zip(state[p + "attn.in_proj_weight"].chunk(3),
                                               state[p + "attn.in_proj_bias"].chunk(3)))
        length, batch, width = h.shape
        split = lambda t: t.reshape(length, batch * heads, width // heads).transpose(0, 1)  # noqa: E731
        weights = torch.softmax(split(q) @ split(k).transpose(1, 2) / math.sqrt(width // heads), dim=-1)
        attn = (weights @ split(v)).transpose(0, 1).reshape(length, batch, width)
        x = x + attn @ state[p + "attn.out_proj.weight"].T + state[p + "attn.out_proj.bias"]
        m = ln(x, p + "ln_2") @ state[p + "mlp.c_fc.weight"].T + state[p + "mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)
        x = x + m @ state[p + "mlp.c_proj.weight"].T + state[p + "mlp.c_proj.bias"]
        i += 1
    x = x.permute(1, 0, 2)
    return ln(x[:, -tokens:], "ln_post") @ state["proj"]


def test_file_round_trip_and_forward(tmp_path, tiny):
    path = sm.write_style_model_file(tiny, tmp_path / "style.safetensors")
    loaded = sm.load_style_model(path)
    for (name, a), b in zip(tiny.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # the published key layout, with ComfyUI's spelling
    assert {"style_embedding", "proj", "ln_pre.weight", "transformer_layes.1.attn.in_proj_weight",
            "transformer_layes.0.mlp.c_fc.bias"} <= set(tiny.state_dict())
    # a .pth pickle of the same weights (how the published file comes) loads through the weights-only unpickler
    torch.save(dict(tiny.state_dict()), tmp_path / "style.pth")
    pickled = sm.load_style_model(tmp_path / "style.pth")
    assert all(torch.equal(a, b) for a, b in zip(tiny.state_dict().values(), pickled.state_dict().values()))

    hidden = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(0))
    ours = sm.style_tokens(loaded, hidden)
    reference = _reference({k: v.float() for k, v in tiny.state_dict().items()}, hidden)
    assert ours.shape == (1, 2 * 8, 32)  # both images' 8 tokens in one row
    torch.testing.assert_close(ours, reference.reshape(1, -1, 32), rtol=1e-5, atol=1e-5)


def test_config_of_the_published_model():
    """t2iadapter_style_sd14v1's shapes (no weights): 1024 wide, 8 tokens, 3 blocks, 768-wide output."""
    shapes = {"style_embedding": (1, 8, 1024), "proj": (1024, 768), "ln_pre.weight": (1024,)}
    shapes.update({f"transformer_layes.{i}.attn.in_proj_weight": (3072, 1024) for i in range(3)})
    config = sm.config_from_shapes({k: torch.zeros(1).expand(*s) for k, s in shapes.items()})
    assert config == {"width": 1024, "context_dim": 768, "tokens": 8, "layers": 3}
    with pytest.raises(sm.StyleModelError, match="not a style model"):
        sm.config_from_shapes({"redux_down.weight": torch.zeros(2, 2)})


def test_strength_semantics():
    embeds = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    tokens = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(2))
    two = (Conditioning(embeds), Conditioning(embeds * 2))  # after ConditioningCombine: every prompt gets them
    out = sm.apply(two, tokens, 0.25, "multiply")
    for c, base in zip(out, two):
        assert c.embeds.shape == (1, 77 + 16, 32)
        assert torch.equal(c.embeds[:, :77], base.embeds)
        torch.testing.assert_close(c.embeds[:, 77:], tokens * 0.25, rtol=0, atol=0)
    zero = sm.apply(Conditioning(embeds), tokens, 0.0, "multiply")
    assert torch.equal(zero.embeds[:, 77:], torch.zeros(1, 16, 32))
    # attn_bias: only read by model families with attention masks (Flux); on SD models the tokens go in unscaled
    biased = sm.apply(Conditioning(embeds), tokens, 0.25, "attn_bias")
    assert torch.equal(biased.embeds[:, 77:], tokens)
    with pytest.raises(sm.StyleModelError, match="48 wide"):
        sm.apply(Conditioning(torch.zeros(1, 77, 48)), tokens, 1.0, "multiply")


def test_nodes_end_to_end(tmp_path):
    from nodegraph.engine import default_registry
    from nodegraph_nodes.diffusion.clip_vision import tiny_clip_vision, write_clip_vision_file
    from nodegraph_nodes.diffusion.keymap import write_single_file
    from nodegraph_nodes.diffusion.tiny import tiny_sd1
    from support.sd import Runner, make_folders

    root = tmp_path / "models"
    write_single_file(tiny_sd1(0), root / "checkpoints" / "tiny_sd1.safetensors")
    write_clip_vision_file(tiny_clip_vision(13), root / "clip_vision" / "cv.safetensors")
    sm.write_style_model_file(sm.tiny_style_model(seed=16), root / "style_models" / "style.safetensors")
    (root / "style_models" / "not_style.safetensors").write_bytes(
        (root / "clip_vision" / "cv.safetensors").read_bytes())

    def workflow(strength, strength_type="multiply", name="style.safetensors"):
        return {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
            "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "cv.safetensors"}},
            "3": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                         "color": 0x2040ff}},
            "4": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["2", 0], "image": ["3", 0],
                                                              "crop": "center"}},
            "5": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": name}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
            "7": {"class_type": "StyleModelApply", "inputs": {
                "conditioning": ["6", 0], "style_model": ["5", 0], "clip_vision_output": ["4", 0],
                "strength": strength, "strength_type": strength_type}},
            "8": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
            "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "10": {"class_type": "KSampler", "inputs": {
                "seed": 1, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                "model": ["1", 0], "positive": ["7", 0], "negative": ["8", 0], "latent_image": ["9", 0]}},
            "12": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
            "11": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
        }

    runner = Runner(make_folders(tmp_path, root))
    full = runner.run(workflow(1.0)).values
    assert full["7"][0].embeds.shape == (1, 77 + 8, 32)
    half = runner.run(workflow(0.5)).values
    torch.testing.assert_close(half["7"][0].embeds[:, 77:], full["7"][0].embeds[:, 77:] * 0.5)
    assert not torch.equal(half["10"][0]["samples"], full["10"][0]["samples"])
    biased = runner.run(workflow(0.5, "attn_bias")).values
    assert torch.equal(biased["10"][0]["samples"], full["10"][0]["samples"])

    events: list = []
    runner.run(workflow(1.0, name="not_style.safetensors"), events=events)
    errors = [d for e, d in events if e == "execution_error"]
    assert errors and errors[0]["node_type"] == "StyleModelLoader"
    assert "not a style model" in errors[0]["exception_message"]

    apply = default_registry().get("StyleModelApply").object_info()
    required = apply["input"]["required"]
    assert list(required) == ["conditioning", "style_model", "clip_vision_output", "strength", "strength_type"]
    assert required["strength"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001}]
    assert required["strength_type"][0] == ["multiply", "attn_bias"]
    assert apply["category"] == "conditioning/style_model" and apply["output"] == ["CONDITIONING"]
    loader = default_registry().get("StyleModelLoader").object_info()
    assert list(loader["input"]["required"]) == ["style_model_name"] and loader["output"] == ["STYLE_MODEL"]
