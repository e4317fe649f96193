"""Tiny random LoRAs and textual-inversion embeddings for the tiny models, in the layouts people publish.

Written by `make_tiny_models` next to the tiny checkpoints so that every loading path runs in tests:
- `loras/tiny_lora_sd1_kohya.safetensors`: sd-scripts' SD1 layout (`lora_unet_<diffusers path>`, `lora_te_`),
  alpha = rank / 2, attention and feed-forward Linears, a LoCon resnet convolution, text-encoder projections;
- `loras/tiny_lora_sd1_diffusers.safetensors`: the same layers in the PEFT layout diffusers saves
  (`unet.<path>.lora_A.weight`, `text_encoder.<path>.lora_B.weight`, no alpha);
- `loras/tiny_lora_sd1_kohya.pt`: the kohya file as a torch pickle (read through the weights-only unpickler);
- `loras/tiny_lora_sdxl_kohya.safetensors`: sd-scripts' SDXL layout (original UNet paths
  `lora_unet_input_blocks_4_1_...`, `lora_te1_` / `lora_te2_`);
- `embeddings/tiny_embedding.safetensors` ("emb_params", 2 vectors), `embeddings/tiny_embedding_a1111.pt`
  (A1111's `string_to_param`, 3 vectors), `embeddings/tiny_embedding_sdxl.safetensors` ("clip_l" / "clip_g").
The same seed always writes the same bytes.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from nodegraph_nodes.diffusion.keymap import unet_to_original
from nodegraph_nodes.diffusion.tiny import Components, seeded

RANK = 4
UP_STD = 0.2  # large enough that a LoRA visibly changes a tiny random model's output
UNET_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_k", "attn2.to_v", "ff.net.2")
TEXT_LINEARS = ("self_attn.q_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1")


def _targets(model: torch.nn.Module, suffixes: Iterable[str], conv: bool) -> list[tuple[str, torch.nn.Module]]:
    out = []
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and path.endswith(tuple(suffixes)):
            out.append((path, module))
        elif conv and isinstance(module, torch.nn.Conv2d) and path.endswith("resnets.0.conv1"):
            out.append((path, module))  # LoCon: a k x k down, a 1 x 1 up
    return out


def _pair(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(module, torch.nn.Conv2d):
        down = torch.randn(RANK, module.in_channels, *module.kernel_size) / module.weight[0].numel() ** 0.5
        up = torch.randn(module.out_channels, RANK, 1, 1) * UP_STD
    else:
        down = torch.randn(RANK, module.in_features) / module.in_features ** 0.5
        up = torch.randn(module.out_features, RANK) * UP_STD
    return down, up


def _text_path(path: str) -> str:
    """transformers 5's CLIPTextModel has no `text_model.` level; every LoRA layout writes it."""
    return path if path.startswith("text_model.") else "text_model." + path


def lora_layers(components: Components, seed: int) -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """(model: "unet" / "te1" / "te2", module path, down, up) for random adapters on `components`."""
    layers = []
    with seeded(seed):
        for path, module in _targets(components.unet, UNET_LINEARS, conv=True):
            layers.append(("unet", path, *_pair(module)))
        for i, encoder in enumerate(components.text_encoders):
            for path, module in _targets(encoder, TEXT_LINEARS, conv=False):
                layers.append((f"te{i + 1}", _text_path(path), *_pair(module)))
    return layers


def kohya_state_dict(components: Components, seed: int) -> dict[str, torch.Tensor]:
    """sd-scripts' names: SD1 UNet by diffusers path, SDXL UNet by original path; lora_te_ / lora_te1_ / lora_te2_."""
    sdxl = len(components.text_encoders) > 1
    config = dict(components.unet.config)
    out = {}
    for model, path, down, up in lora_layers(components, seed):
        if model == "unet":
            name = path
            if sdxl:
                (original,) = unet_to_original({path + ".weight": None}, config)
                name = original.removesuffix(".weight")
            key = "lora_unet_" + name.replace(".", "_")
        else:
            prefix = ("lora_te1_" if model == "te1" else "lora_te2_") if sdxl else "lora_te_"
            key = prefix + path.replace(".", "_")
        out[f"{key}.lora_down.weight"] = down.contiguous()
        out[f"{key}.lora_up.weight"] = up.contiguous()
        out[f"{key}.alpha"] = torch.tensor(RANK / 2)
    return out


def diffusers_state_dict(components: Components, seed: int) -> dict[str, torch.Tensor]:
    """The PEFT layout diffusers' `save_lora_weights` writes (no alpha: scale 1)."""
    prefixes = {"unet": "unet.", "te1": "text_encoder.", "te2": "text_encoder_2."}
    out = {}
    for model, path, down, up in lora_layers(components, seed):
        out[f"{prefixes[model]}{path}.lora_A.weight"] = down.contiguous()
        out[f"{prefixes[model]}{path}.lora_B.weight"] = up.contiguous()
    return out


def write_tiny_loras(root: Path, sd1: Components, sdxl: Components, seed: int) -> dict[str, Path]:
    written = {}
    folder = root / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    kohya = kohya_state_dict(sd1, seed + 11)
    for name, state in (("tiny_lora_sd1_kohya.safetensors", kohya),
                        ("tiny_lora_sd1_diffusers.safetensors", diffusers_state_dict(sd1, seed + 11)),
                        ("tiny_lora_sdxl_kohya.safetensors", kohya_state_dict(sdxl, seed + 12))):
        save_file(state, str(folder / name))
        written[name.removesuffix(".safetensors")] = folder / name
    torch.save(kohya, folder / "tiny_lora_sd1_kohya.pt")
    written["tiny_lora_sd1_kohya_pt"] = folder / "tiny_lora_sd1_kohya.pt"
    return written


def write_tiny_embeddings(root: Path, sd1: Components, sdxl: Components, seed: int) -> dict[str, Path]:
    folder = root / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    width = sd1.text_encoders[0].config.hidden_size
    widths = [e.config.hidden_size for e in sdxl.text_encoders]
    with seeded(seed + 13):
        plain = torch.randn(2, width)
        a1111 = torch.randn(3, width)
        sdxl_l, sdxl_g = torch.randn(2, widths[0]), torch.randn(2, widths[1])
    save_file({"emb_params": plain}, str(folder / "tiny_embedding.safetensors"))
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": a1111}, "name": "tiny_embedding_a1111",
                "step": 100}, folder / "tiny_embedding_a1111.pt")
    save_file({"clip_l": sdxl_l, "clip_g": sdxl_g}, str(folder / "tiny_embedding_sdxl.safetensors"))
    return {p.stem if p.suffix == ".safetensors" else p.stem + "_pt": p
            for p in (folder / "tiny_embedding.safetensors", folder / "tiny_embedding_a1111.pt",
                      folder / "tiny_embedding_sdxl.safetensors")}
