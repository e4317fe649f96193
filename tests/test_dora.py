"""DoRA (weight-decomposed LoRA) through the LoRA patches.

Two references, because the two layouts mean different things:
* `dora_scale` (kohya / LyCORIS / ComfyUI files): ComfyUI's weight_decompose, written out here. Per output channel
  it divides by the norms of the base weight, per input channel by the adapted weight's column norms.
* `lora_magnitude_vector` (PEFT / diffusers files): peft's own DoRA layers (`use_dora=True`) on the tiny SD1 UNet;
  the model with our patches must compute what peft's model computes. ComfyUI does not read this key at all (it
  applies such a file as a plain LoRA); README lists that difference.
Strength is ComfyUI's for both: the weight moves `strength` of the way from W to the decomposed weight (peft scales
inside the norm instead, so strengths other than 1 are compared against peft's merged weight, interpolated).
"""
from __future__ import annotations

import copy

import pytest
import torch

from nodegraph_nodes.diffusion.lora import Adapter, parse_lora
from nodegraph_nodes.diffusion.patching import apply, restore


def _comfy_weight_decompose(dora_scale, weight, lora_diff, alpha, strength):
    """ComfyUI's weight_decompose (comfy/weight_adapter/base.py), float32, identity function."""
    weight = weight.clone()
    weight_calc = weight + lora_diff * alpha
    if dora_scale.shape[0] == weight_calc.shape[0]:
        weight_norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True).reshape(
            weight.shape[0], *[1] * (weight.dim() - 1))
    else:
        weight_norm = (weight_calc.transpose(0, 1).reshape(weight_calc.shape[1], -1).norm(dim=1, keepdim=True)
                       .reshape(weight_calc.shape[1], *[1] * (weight_calc.dim() - 1)).transpose(0, 1))
    weight_norm = weight_norm + torch.finfo(torch.float32).eps
    weight_calc = weight_calc * (dora_scale / weight_norm)
    if strength != 1.0:
        return weight + strength * (weight_calc - weight)
    return weight_calc


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3, 3)], ids=["linear", "conv"])
@pytest.mark.parametrize("axis", ["output", "input"])
@pytest.mark.parametrize("strength", [1.0, 0.4, -1.5])
def test_dora_scale_is_comfyuis_weight_decompose(shape, axis, strength):
    g = torch.Generator().manual_seed(0)
    out, inp = shape[0], shape[1]
    weight = torch.randn(shape, generator=g)
    down = torch.randn(2, inp, *shape[2:], generator=g)
    up = torch.randn(out, 2, *[1] * (len(shape) - 2), generator=g)
    scale_shape = (out, 1, *[1] * (len(shape) - 2)) if axis == "output" else (1, inp, *[1] * (len(shape) - 2))
    dora_scale = torch.rand(scale_shape, generator=g) + 0.5
    adapter = Adapter("x", {"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(3.0),
                            "dora_scale": dora_scale})
    ours = weight + adapter.change(weight, strength)
    diff = (up.flatten(1) @ down.flatten(1)).reshape(shape)
    expected = _comfy_weight_decompose(dora_scale, weight, diff, 3.0 / 2, strength)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


def test_dora_after_a_plain_lora_sees_the_patched_weight():
    """ComfyUI applies patches one after another: a DoRA layer decomposes the weight the earlier LoRA left."""
    from nodegraph_nodes.diffusion.tiny import tiny_sd1

    unet = tiny_sd1(0).unet
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    name = "lora_unet_" + path.replace(".", "_")
    layer = unet.get_submodule(path)
    base = layer.weight.detach().clone()
    g = torch.Generator().manual_seed(1)
    plain_up, plain_down = torch.randn(32, 1, generator=g), torch.randn(1, 32, generator=g)
    dora_up, dora_down = torch.randn(32, 2, generator=g), torch.randn(2, 32, generator=g)
    scale = torch.rand(1, 32, generator=g) + 0.5
    plain = parse_lora({f"{name}.lora_up.weight": plain_up, f"{name}.lora_down.weight": plain_down})
    dora = parse_lora({f"{name}.lora_up.weight": dora_up, f"{name}.lora_down.weight": dora_down,
                       f"{name}.dora_scale": scale})
    models = {"unet": unet}
    saved = apply(models, [(plain, 0.7), (dora, 0.5)])
    after_plain = base + 0.7 * plain_up @ plain_down
    expected = _comfy_weight_decompose(scale, after_plain, dora_up @ dora_down, 1.0, 0.5)
    torch.testing.assert_close(layer.weight.detach(), expected, rtol=1e-6, atol=1e-6)
    restore(models, saved)
    assert torch.equal(layer.weight.detach(), base)


def test_peft_dora_parity_on_a_tiny_unet(tmp_path):
    """A PEFT DoRA (attention projections, resnet convolutions, proj_in) saved in diffusers' layout, applied by our
    patches, computes what peft's DoRA model computes (same inputs, same UNet call)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    from nodegraph_nodes.diffusion.lora import read_lora_file
    from nodegraph_nodes.diffusion.tiny import tiny_sd1

    base = tiny_sd1(0).unet
    peft_unet = copy.deepcopy(base)
    config = LoraConfig(r=4, lora_alpha=4, use_dora=True,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"])
    inject_adapter_in_model(config, peft_unet)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # trained-looking adapters: B is zero and the magnitude equals the norms at init
        for name, p in peft_unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.3 * torch.rand(p.shape, generator=g))
    state = {"unet." + k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(peft_unet).items()}
    assert any(k.endswith("lora_magnitude_vector") for k in state)
    save_file(state, str(tmp_path / "dora.safetensors"))
    lora = read_lora_file(tmp_path / "dora.safetensors")
    assert all(a.decomposes for a in lora.adapters.values())

    ours = copy.deepcopy(base)
    saved = apply({"unet": ours}, [(lora, 1.0)])
    assert len(saved) == len(lora.adapters)
    sample = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        theirs_out = peft_unet(sample, 500, encoder_hidden_states=context).sample
        ours_out = ours(sample, 500, encoder_hidden_states=context).sample
        base_out = base(sample, 500, encoder_hidden_states=context).sample
    diff = (ours_out - theirs_out).abs().max().item()
    print(f"DoRA parity with peft: max |UNet output diff| = {diff:.2e} "
          f"(DoRA's own effect: {(theirs_out - base_out).abs().max().item():.2e})")
    assert diff <= 1e-4
    assert (theirs_out - base_out).abs().max() > 100 * max(diff, 1e-6)

    # ComfyUI's strength: the weight moves `strength` of the way to the decomposed weight (peft's merge at 1)
    from peft.tuners.lora import LoraLayer

    merged = {}
    merged_unet = copy.deepcopy(peft_unet)
    for name, module in merged_unet.named_modules():
        if isinstance(module, LoraLayer):
            module.merge()  # peft's own merge of the DoRA layer into its base weight
            merged[name] = module.get_base_layer().weight.detach()
    restore({"unet": ours}, saved)
    apply({"unet": ours}, [(lora, 0.5)])
    for name, weight in merged.items():
        original = base.get_submodule(name).weight.detach()
        torch.testing.assert_close(ours.get_submodule(name).weight.detach(), original + 0.5 * (weight - original),
                                   rtol=1e-5, atol=1e-6)


def test_dora_scale_on_loha_and_lokr_layers():
    """ComfyUI decomposes LoHa and LoKr layers with a dora_scale the same way (their change in place of up @ down)."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(6, 4, generator=g)
    scale = torch.rand(1, 4, generator=g) + 0.5
    w1a, w1b, w2a, w2b = (torch.randn(s, generator=g) for s in ((6, 2), (2, 4), (6, 2), (2, 4)))
    loha = Adapter("h", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                         "alpha": torch.tensor(1.0), "dora_scale": scale})
    torch.testing.assert_close(weight + loha.change(weight, 0.6), _comfy_weight_decompose(
        scale, weight, (w1a @ w1b) * (w2a @ w2b), 1.0 / 2, 0.6), rtol=1e-6, atol=1e-6)
    k1, k2 = torch.randn(2, 2, generator=g), torch.randn(3, 2, generator=g)
    lokr = Adapter("k", {"lokr_w1": k1, "lokr_w2": k2, "dora_scale": torch.rand(6, 1, generator=g) + 0.5})
    torch.testing.assert_close(weight + lokr.change(weight, 1.0), _comfy_weight_decompose(
        lokr.tensors["dora_scale"], weight, torch.kron(k1, k2), 1.0, 1.0), rtol=1e-6, atol=1e-6)
