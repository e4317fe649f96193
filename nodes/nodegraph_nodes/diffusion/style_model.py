"""T2I-Adapter style models (StyleModelLoader / StyleModelApply): CLIP image features -> extra prompt tokens.

The published model (TencentARC's t2iadapter_style_sd14v1, for SD1.x) reads the CLIP ViT-L/14 vision tower's last
hidden state ([B, 257, 1024]), appends `num_token` learned style tokens, runs the sequence through a few pre-norm
transformer blocks (multi-head self-attention, a 4x MLP with quick-GELU), layer-norms the style tokens and projects
them to the text encoder's width: [B, num_token, 768]. StyleModelApply appends those tokens (all images' tokens in
one row, [1, B * num_token, 768]) to every prompt of the conditioning.

diffusers has no style adapter, so the module below is written for the file's key layout:
`style_embedding` [1, tokens, width], `ln_pre.*`, `ln_post.*`, `proj` [width, context] (applied as `x @ proj`), and
per block `transformer_layes.{i}.` (sic) `ln_1.*`, `attn.in_proj_weight|bias` (q, k, v stacked), `attn.out_proj.*`,
`ln_2.*`, `mlp.c_fc.*`, `mlp.c_proj.*`. The width, token count, context width and depth are read off the shapes;
the head count is not in the weights: 8, the published model's (ComfyUI builds every style file with 8).

strength_type (ComfyUI's StyleModelApply): "multiply" scales the style tokens by `strength`; "attn_bias" leaves them
unscaled and records an attention bias of log(strength) for them, which ComfyUI passes only to model families that
read an attention mask (Flux); its SD1 / SD2 / SDXL models ignore it, so on the families nodegraph runs "attn_bias"
appends the tokens unchanged, as ComfyUI's result on them is.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

HEADS = 8  # not stored in the file; the published style model's (ComfyUI's fixed choice)
STRENGTH_TYPES = ("multiply", "attn_bias")


class StyleModelError(ValueError):
    """A file that is not a style model of a supported layout."""


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """A pre-norm transformer block; submodule names follow the file's keys."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class StyleAdapter(nn.Module):
    """CLIP vision hidden states [B, L, width] -> style tokens [B, tokens, context]."""

    def __init__(self, width: int, context_dim: int, tokens: int, layers: int, heads: int = HEADS) -> None:
        super().__init__()
        self.style_embedding = nn.Parameter(torch.zeros(1, tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer_layes = nn.Sequential(*[_Block(width, heads) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    @property
    def tokens(self) -> int:
        return self.style_embedding.shape[1]

    @property
    def width(self) -> int:
        return self.style_embedding.shape[2]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        style = self.style_embedding.expand(hidden.shape[0], -1, -1).to(hidden.dtype)
        x = self.ln_pre(torch.cat([hidden, style], dim=1))
        x = self.transformer_layes(x)
        return self.ln_post(x[:, -self.tokens:]) @ self.proj


def config_from_shapes(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    if "style_embedding" not in state or "proj" not in state:
        raise StyleModelError(
            "not a style model: a T2I-Adapter style model has `style_embedding` and `proj` weights; found "
            f"{sorted(state)[:6]} (Flux Redux models are not supported: nodegraph runs no Flux models)"
        )
    _, tokens, width = state["style_embedding"].shape
    layers = 1 + max((int(m[1]) for k in state if (m := re.match(r"transformer_layes\.(\d+)\.", k))), default=-1)
    return {"width": width, "context_dim": state["proj"].shape[1], "tokens": tokens, "layers": layers}


def load_style_model(path: str | Path) -> StyleAdapter:
    """A style model from a .safetensors file or a pickle (.pth, read with torch's weights-only unpickler, as
    ComfyUI does: the published style model is a .pth)."""
    from .checkpoint_files import _assemble, _empty
    from .weights_files import WeightsFileError, load_state_dict

    path = Path(path)
    try:
        state = load_state_dict(path, allow_pickle=True)
    except WeightsFileError as error:
        raise StyleModelError(str(error)) from error
    try:
        config = config_from_shapes(state)
    except StyleModelError as error:
        raise StyleModelError(f"{path.name}: {error}") from error
    return _assemble("style model", _empty(lambda: StyleAdapter(**config)), state, path, None)


def style_tokens(model: StyleAdapter, last_hidden_state: torch.Tensor) -> torch.Tensor:
    """[1, B * tokens, context] float32 CPU: every image's style tokens in one row (ComfyUI's get_cond, flattened)."""
    hidden_width = last_hidden_state.shape[-1]
    if hidden_width != model.width:
        raise StyleModelError(
            f"the CLIP vision output is {hidden_width} wide but this style model reads {model.width}-wide features "
            "(the published SD1 style model needs CLIP ViT-L/14)"
        )
    param = next(model.parameters())
    with torch.inference_mode():
        out = model(last_hidden_state.to(param.device, param.dtype))
    return out.float().cpu().reshape(1, -1, out.shape[-1])


def apply(conditioning: Any, tokens: torch.Tensor, strength: float, strength_type: str) -> Any:
    """StyleModelApply: the style tokens appended to every prompt of the conditioning (see the module doc)."""
    from dataclasses import replace

    from .conditioning import map_entries

    if strength_type not in STRENGTH_TYPES:
        raise StyleModelError(f"strength_type must be one of {STRENGTH_TYPES}, not {strength_type!r}")
    if strength_type == "multiply":
        tokens = tokens * strength

    def append(c: Any) -> Any:
        if c.embeds.shape[-1] != tokens.shape[-1]:
            raise StyleModelError(
                f"the style model makes {tokens.shape[-1]}-wide tokens but the conditioning's are "
                f"{c.embeds.shape[-1]} wide (the published style model is for SD1.x, 768)"
            )
        return replace(c, embeds=torch.cat([c.embeds, tokens.to(c.embeds.dtype)], dim=1))

    return map_entries(conditioning, append)


def tiny_style_model(width: int = 32, context_dim: int = 32, tokens: int = 8, layers: int = 2,
                     seed: int = 0) -> StyleAdapter:
    """A random style model for tests: reads tiny_clip_vision's 32-wide hidden states, makes tiny_sd1-wide tokens."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StyleAdapter(width, context_dim, tokens, layers)
        with torch.no_grad():  # ComfyUI's initial scales: width ** -0.5 for the style tokens and the projection
            model.style_embedding.normal_(0.0, width ** -0.5)
            model.proj.normal_(0.0, width ** -0.5)
    return model.eval()


def write_style_model_file(model: StyleAdapter, path: Path) -> Path:
    """The model as a .safetensors file in the published key layout (no header: the shapes describe it)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path



def read_style_model(path: str) -> dict[str, Any]:
    """The model cache's reader for style model files."""
    return {"style_model": load_style_model(path)}
