"""CLIP vision encoders (the image tower of CLIP, as IP-Adapter, unCLIP and style models use) on transformers'
CLIPVisionModelWithProjection.

Files: `.safetensors` in transformers' key layout (`vision_model.*`, `visual_projection.weight`), the layout of the
CLIP vision files ComfyUI users hold (clip_vision_g, ViT-H, ViT-L). Pickles are refused, as for checkpoints. The
architecture comes from our own header (tiny test models) or is read off the shapes: width from the patch
embedding, patch size from its kernel, image size from the number of positions, depth from the layer count, MLP
width from fc1, projection width from visual_projection; 16 attention heads (as in every released CLIP vision
tower: ViT-L/14, ViT-H/14, ViT-bigG/14) and quick_gelu for OpenAI's 1024-wide ViT-L, gelu for the OpenCLIP ones.

Encoding follows ComfyUI's CLIPVisionEncode: the image is resized (bicubic, antialiased) so its short side is the
model's size and center-cropped ("center"), or squashed to a square ("none"); rounded to 8-bit levels; normalised
with CLIP's mean and std. The output carries the last hidden state, the penultimate layer's hidden states and the
projected image embeddings.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
METADATA_KEY = "nodegraph.config"
_PATCH = "vision_model.embeddings.patch_embedding.weight"
_POSITIONS = "vision_model.embeddings.position_embedding.weight"


class ClipVisionError(ValueError):
    """A file that is not a CLIP vision model of a supported layout."""


@dataclass(frozen=True)
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: float32 CPU tensors [B, tokens, width] / [B, projection]."""

    last_hidden_state: torch.Tensor
    penultimate_hidden_states: torch.Tensor
    image_embeds: torch.Tensor

    def __getitem__(self, key: str) -> torch.Tensor:  # ComfyUI's nodes read it like a dict
        return getattr(self, key)

    def cache_nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (
            self.last_hidden_state, self.penultimate_hidden_states, self.image_embeds))


def config_from_shapes(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A CLIPVisionConfig dict for a transformers-layout state dict of a released CLIP vision tower."""
    if _PATCH not in state or "visual_projection.weight" not in state:
        found = sorted({".".join(k.split(".")[:2]) for k in state})[:8]
        raise ClipVisionError(
            "not a CLIP vision model in transformers' layout (vision_model.*, visual_projection.weight); found "
            f"{found}. OpenCLIP-layout files (visual.transformer.*) are not supported yet."
        )
    width, _, patch, _ = state[_PATCH].shape
    grid = round((state[_POSITIONS].shape[0] - 1) ** 0.5)
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("vision_model.encoder.layers."))
    return {
        "hidden_size": width,
        "intermediate_size": state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "patch_size": patch,
        "image_size": grid * patch,
        "projection_dim": state["visual_projection.weight"].shape[0],
        "hidden_act": "quick_gelu" if width == 1024 else "gelu",
        "layer_norm_eps": 1e-5,
    }


def load_clip_vision(path: str | Path) -> Any:
    """A CLIPVisionModelWithProjection (eval, CPU, fp32 as stored) from a file."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from .checkpoint_files import _assemble, _empty
    from .weights_files import load_state_dict, read_metadata

    path = Path(path)
    state = load_state_dict(path, allow_pickle=False)
    header = read_metadata(path).get(METADATA_KEY)
    config = json.loads(header)["config"] if header else config_from_shapes(state)
    state.pop("vision_model.embeddings.position_ids", None)  # a constant buffer some files carry
    model = _empty(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**config)))
    return _assemble("clip vision", model, state, path, None)


def preprocess(image: torch.Tensor, size: int, crop: bool) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> normalised pixel values [B, 3, size, size] (see the module doc)."""
    x = image[..., :3].movedim(-1, 1).float()
    if x.shape[-2:] != (size, size):
        if crop:
            scale = size / min(x.shape[-2:])
            target = (round(scale * x.shape[-2]), round(scale * x.shape[-1]))
        else:
            target = (size, size)
        x = F.interpolate(x, size=target, mode="bicubic", antialias=True)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[:, :, top : top + size, left : left + size]
    x = (x * 255.0).clamp(0, 255).round() / 255.0
    mean = torch.tensor(CLIP_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).reshape(1, 3, 1, 1)
    return (x - mean) / std


def encode_image(model: Any, image: torch.Tensor, crop: bool) -> ClipVisionOutput:
    param = next(model.parameters())
    pixels = preprocess(image, model.config.image_size, crop).to(param.device, param.dtype)
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
    cpu = lambda t: t.detach().float().cpu()  # noqa: E731
    return ClipVisionOutput(cpu(out.last_hidden_state), cpu(out.hidden_states[-2]), cpu(out.image_embeds))


def tiny_clip_vision(seed: int = 0) -> Any:
    """A random CLIP vision tower (32 wide, 2 layers, 32 px images in 8 px patches), for tests."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(config).eval()


def write_clip_vision_file(model: Any, path: Path) -> Path:
    """The model as a transformers-layout .safetensors file with its config in the header."""
    from safetensors.torch import save_file

    keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
            "patch_size", "projection_dim", "hidden_act", "layer_norm_eps")
    config = {k: getattr(model.config, k) for k in keep}
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps({"kind": "clip_vision", "config": config})})
    return path
