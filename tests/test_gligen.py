"""GLIGEN: GLIGENLoader / GLIGENTextBoxApply on the tiny SD1 model and make-tiny-models' tiny GLIGEN file.

Parity reference: diffusers' own gated UNet (UNet2DConditionModel(attention_type="gated"), the model of
StableDiffusionGLIGENPipeline) loaded with the base UNet's weights and the file's gated layers under diffusers
names mapped here by hand, called with diffusers' `gligen` arguments. It is compared one UNet call at a time:
the GLIGEN pipeline's sampling differs from ComfyUI's on purpose (it also gives the boxes to the unconditional half
and turns GLIGEN off after a fraction of the steps; ComfyUI, and nodegraph, apply the boxes to the conditionings that
carry them, at every step).
"""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph.engine import default_registry
from nodegraph_nodes.diffusion.gligen import GligenError, read_gligen_file, unet_kwargs
from nodegraph_nodes.diffusion.tiny import tiny_sd1
from nodegraph_testmodels.files import make_tiny_models
from support.sd import Runner, make_folders
from support.workflows import txt2img

GLIGEN = "tiny_gligen_sd1.safetensors"
# tiny_sd1's transformer blocks: the original (LDM) block name and diffusers' name, written out by hand
BLOCKS = {
    "input_blocks.1.1": "down_blocks.0.attentions.0",
    "input_blocks.2.1": "down_blocks.0.attentions.1",
    "middle_block.1": "mid_block.attentions.0",
    "output_blocks.3.1": "up_blocks.1.attentions.0",
    "output_blocks.4.1": "up_blocks.1.attentions.1",
    "output_blocks.5.1": "up_blocks.1.attentions.2",
}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    make_tiny_models(root)
    # the same GLIGEN model with closed gates (alpha 0): it must change nothing
    state = load_file(str(root / "gligen" / GLIGEN))
    save_file({k: torch.zeros_like(v) if k.endswith(("alpha_attn", "alpha_dense")) else v for k, v in state.items()},
              str(root / "gligen" / "closed.safetensors"))
    return root


@pytest.fixture
def runner(tmp_path, models_root):
    return Runner(make_folders(tmp_path, models_root))  # a runtime (and model cache) of its own


def reference_unet(models_root):
    """diffusers' gated UNet with tiny_sd1's weights and the GLIGEN file's layers."""
    from diffusers import UNet2DConditionModel

    base = tiny_sd1(0).unet
    config = {k: v for k, v in base.config.items() if not k.startswith("_")}
    gated = UNet2DConditionModel(**{**config, "attention_type": "gated"})
    state = dict(base.state_dict())
    for key, value in load_file(str(models_root / "gligen" / GLIGEN)).items():
        if key.startswith("position_net."):
            state[key] = value
            continue
        block, rest = key.split(".transformer_blocks.0.fuser.")
        state[f"{BLOCKS[block]}.transformer_blocks.0.fuser.{rest}"] = value
    gated.load_state_dict(state, strict=True)
    return gated.eval(), base.eval()


def test_the_tiny_file_has_comfyuis_layout(models_root):
    keys = load_file(str(models_root / "gligen" / GLIGEN)).keys()
    blocks = {k.split(".transformer_blocks.0.fuser.")[0] for k in keys if ".fuser." in k}
    assert blocks == set(BLOCKS)
    assert {"position_net.null_positive_feature", "position_net.null_position_feature",
            "position_net.linears.0.weight", "position_net.linears.4.weight"} <= set(keys)
    assert "input_blocks.1.1.transformer_blocks.0.fuser.attn.to_q.weight" in keys
    assert "input_blocks.1.1.transformer_blocks.0.fuser.ff.net.0.proj.weight" in keys
    model = read_gligen_file(models_root / "gligen" / GLIGEN)
    assert len(model.fusers) == 6 and model.key_dim == 32


def test_one_unet_call_equals_diffusers_gated_unet(models_root):
    """Two boxes given in pixels on a 64 x 64 image (an 8 x 8 latent): (x 16, y 8, 32 x 40) and (0, 32, 24 x 24)
    are the xyxy fractions (2/8, 1/8, 6/8, 6/8) and (0, 4/8, 3/8, 7/8) of the latent."""
    reference, base = reference_unet(models_root)
    gligen = read_gligen_file(models_root / "gligen" / GLIGEN)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, 32)
    phrases = torch.randn(2, 32)
    boxes = ((phrases[0:1], 40 // 8, 32 // 8, 8 // 8, 16 // 8), (phrases[1:2], 24 // 8, 24 // 8, 32 // 8, 0 // 8))
    with torch.no_grad():
        ours = base(x, t, encoder_hidden_states=context, **unet_kwargs(base, gligen, boxes, x.shape))[0]
        xyxy = torch.zeros(2, 30, 4)
        xyxy[:, 0] = torch.tensor([2 / 8, 1 / 8, 6 / 8, 6 / 8])
        xyxy[:, 1] = torch.tensor([0.0, 4 / 8, 3 / 8, 7 / 8])
        masks = torch.zeros(2, 30)
        masks[:, :2] = 1
        embeds = torch.zeros(2, 30, 32)
        embeds[:, :2] = phrases
        expected = reference(x, t, encoder_hidden_states=context, cross_attention_kwargs={
            "gligen": {"boxes": xyxy, "masks": masks, "positive_embeddings": embeds}}).sample
        plain = base(x, t, encoder_hidden_states=context).sample
    diff = (ours - expected).abs().max().item()
    assert diff < 1e-5, diff
    assert (expected - plain).abs().max() > 1e-2  # the boxes do change the prediction
    # the cached UNet is unchanged: same weights, plain calls as before
    assert not any("fuser" in k or "position_net" in k for k in base.state_dict())
    with torch.no_grad():
        assert torch.equal(base(x, t, encoder_hidden_states=context).sample, plain)


def with_box(prompt: dict, gligen: str = GLIGEN, text: str = "a red circle", **box) -> dict:
    prompt = copy.deepcopy(prompt)
    prompt["30"] = {"class_type": "GLIGENLoader", "inputs": {"gligen_name": gligen}}
    prompt["31"] = {"class_type": "GLIGENTextBoxApply", "inputs": {
        "conditioning_to": ["6", 0], "clip": ["4", 1], "gligen_textbox_model": ["30", 0], "text": text,
        "width": box.get("width", 32), "height": box.get("height", 32), "x": box.get("x", 16),
        "y": box.get("y", 0)}}
    prompt["3"]["inputs"]["positive"] = ["31", 0]
    return prompt


def latent(run):
    assert run.status == "success", run.error
    return run.values["3"][0]["samples"]


def test_text_box_changes_the_image_and_closed_gates_change_nothing(runner):
    plain = latent(runner.run(txt2img()))
    boxed = latent(runner.run(with_box(txt2img())))
    assert (boxed - plain).abs().max() > 1e-2
    moved = latent(runner.run(with_box(txt2img(), x=0, y=32)))
    assert (moved - boxed).abs().max() > 1e-3  # where the box is matters
    # closed gates: the plain result, up to float rounding (a conditioning with boxes has its own UNet calls, the
    # plain pair shares one batched call)
    closed = latent(runner.run(with_box(txt2img(), gligen="closed.safetensors")))
    assert (closed - plain).abs().max() <= 1e-5 * plain.abs().max()


def test_box_embedding_is_the_clip_text_models_pooled_output(runner, models_root):
    """The phrase goes in as CLIP's pooled, unprojected output (ComfyUI's return_pooled="unprojected"): for SD1's
    CLIPTextModel that is its pooler_output, computed here with the checkpoint's tokenizer and text model."""
    run = runner.run(with_box(txt2img(), text="a blue square"))
    assert run.status == "success", run.error
    cond = run.values["31"][0]
    handle, boxes = cond.gligen
    assert len(boxes) == 1
    pooled, h, w, y, x = boxes[0]
    assert (h, w, y, x) == (4, 4, 0, 2)
    parts = tiny_sd1(0)
    tokenizer, encoder = parts.tokenizers[0], parts.text_encoders[0]
    ids = tokenizer("a blue square", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = encoder(input_ids=ids).pooler_output
    assert (pooled - expected).abs().max() < 1e-5


def test_boxes_chain_and_more_than_30_fail_clearly(runner):
    prompt = with_box(txt2img())
    prompt["32"] = {"class_type": "GLIGENTextBoxApply", "inputs": {
        "conditioning_to": ["31", 0], "clip": ["4", 1], "gligen_textbox_model": ["30", 0], "text": "blue",
        "width": 16, "height": 24, "x": 40, "y": 8}}
    prompt["3"]["inputs"]["positive"] = ["32", 0]
    run = runner.run(prompt)
    _, boxes = run.values["32"][0].gligen
    assert [b[1:] for b in boxes] == [(4, 4, 0, 2), (3, 2, 1, 5)]
    previous = "31"
    for i in range(30):
        nid = str(100 + i)
        prompt[nid] = copy.deepcopy(prompt["32"])
        prompt[nid]["inputs"]["conditioning_to"] = [previous, 0]
        previous = nid
    prompt["3"]["inputs"]["positive"] = [previous, 0]
    run = runner.run(prompt)
    assert run.status == "error" and run.error["node_id"] == "3"
    assert "31 GLIGEN boxes on one conditioning; at most 30" in run.error["exception_message"]


def test_a_gligen_model_for_another_unet_is_refused(runner, models_root, tmp_path):
    state = load_file(str(models_root / "gligen" / GLIGEN))
    save_file({k: v for k, v in state.items() if not k.startswith("middle_block.")},
              str(models_root / "gligen" / "partial.safetensors"))
    run = runner.run(with_box(txt2img(), gligen="partial.safetensors"))
    assert run.status == "error"
    assert "5 gated layers, the UNet 6 transformer blocks" in run.error["exception_message"]
    (models_root / "gligen" / "partial.safetensors").unlink()
    with pytest.raises(GligenError, match="not a GLIGEN model"):
        save_file({"a": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
        read_gligen_file(tmp_path / "x.safetensors")


def test_node_declarations_are_comfyuis():
    registry = default_registry()
    loader = registry.get("GLIGENLoader").object_info()
    assert loader["category"] == "loaders" and loader["output"] == ["GLIGEN"]
    assert loader["input_order"]["required"] == ["gligen_name"]
    apply = registry.get("GLIGENTextBoxApply").object_info()
    assert apply["category"] == "conditioning/gligen" and apply["output"] == ["CONDITIONING"]
    assert apply["input_order"]["required"] == ["conditioning_to", "clip", "gligen_textbox_model", "text", "width",
                                                "height", "x", "y"]
    required = apply["input"]["required"]
    # ComfyUI gives the text no default; nodegraph's STRING inputs all default to "" (as its CLIPTextEncode's does)
    assert required["text"][0] == "STRING"
    assert required["text"][1] | {"default": ""} == {"default": "", "multiline": True, "dynamicPrompts": True}
    assert required["width"] == ["INT", {"default": 64, "min": 8, "max": 16384, "step": 8}]
    assert required["height"] == ["INT", {"default": 64, "min": 8, "max": 16384, "step": 8}]
    assert required["x"] == ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}]
    assert required["y"] == ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}]


def test_a_clip_of_another_family_is_refused_in_the_box_node(runner):
    prompt = with_box(txt2img())
    prompt["40"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sdxl.safetensors"}}
    prompt["31"]["inputs"]["clip"] = ["40", 1]
    run = runner.run(prompt)
    assert run.status == "error" and run.error["node_id"] == "31"
    assert "GLIGEN runs on SD1 and SD2 models; this CLIP is sdxl's" in run.error["exception_message"]


def test_calls_with_and_without_boxes_share_the_unet_side_by_side(models_root):
    """The dispatchers on the cached UNet take the GLIGEN model from each call's own arguments: threads calling
    one UNet with boxes, with other boxes and without get what each gets alone (as prompts do under
    `serve --concurrency`)."""
    import threading

    base = tiny_sd1(0).unet.eval()
    gligen = read_gligen_file(models_root / "gligen" / GLIGEN)
    torch.manual_seed(1)
    x, context, phrase = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32), torch.randn(1, 32)
    t = torch.tensor([300.0])
    variants = {"plain": {}, "left": unet_kwargs(base, gligen, ((phrase, 8, 4, 0, 0),), x.shape),
                "right": unet_kwargs(base, gligen, ((phrase, 8, 4, 0, 4),), x.shape)}
    with torch.no_grad():
        alone = {name: base(x, t, encoder_hidden_states=context, **kw).sample for name, kw in variants.items()}
    assert not torch.equal(alone["left"], alone["right"]) and not torch.equal(alone["left"], alone["plain"])
    results: dict[str, list[torch.Tensor]] = {name: [] for name in variants}
    start = threading.Barrier(len(variants), timeout=60)

    def worker(name: str) -> None:
        start.wait()
        with torch.no_grad():
            for _ in range(10):
                results[name].append(base(x, t, encoder_hidden_states=context, **variants[name]).sample)

    threads = [threading.Thread(target=worker, args=(name,)) for name in variants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, outs in results.items():
        assert len(outs) == 10 and all(torch.equal(out, alone[name]) for out in outs), name
