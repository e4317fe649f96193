"""A tiny GLIGEN model for a tiny SD1 UNet, written in ComfyUI's GLIGEN file layout (see
nodegraph_nodes/diffusion/gligen.py): random gated
layers, one per transformer block, keyed by the block's original-layout name, and a random box encoder. Its gates
(tanh(alpha)) are opened to 0.5 so the boxes visibly change a tiny model's output."""
from __future__ import annotations

from pathlib import Path

import torch


def tiny_gligen_state(unet: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """{key: tensor} of a GLIGEN model fitting `unet` (its transformer blocks' widths and text width)."""
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    from nodegraph_nodes.diffusion.gligen import _heads, transformer_blocks
    from nodegraph_nodes.diffusion.keymap import unet_to_original

    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        return _state(unet, GatedSelfAttentionDense, GLIGENTextBoundingboxProjection, _heads, transformer_blocks,
                      unet_to_original)


def _state(unet, GatedSelfAttentionDense, GLIGENTextBoundingboxProjection, _heads, transformer_blocks,
           unet_to_original) -> dict[str, torch.Tensor]:
    key_dim = unet.config.cross_attention_dim
    original = {t.data_ptr(): k for k, t in unet_to_original(unet.state_dict(), unet.config).items()}
    state: dict[str, torch.Tensor] = {}
    for block in transformer_blocks(unet):
        query_dim = block.norm1.normalized_shape[0]
        heads = _heads(query_dim, key_dim)
        fuser = GatedSelfAttentionDense(query_dim, key_dim, heads, query_dim // heads)
        with torch.no_grad():
            fuser.alpha_attn.fill_(0.55)  # tanh(0.55) ~ 0.5
            fuser.alpha_dense.fill_(0.55)
        to_q = original[block.attn1.to_q.weight.data_ptr()]  # "<block>.transformer_blocks.0.attn1.to_q.weight"
        prefix = to_q.removesuffix("attn1.to_q.weight")
        state.update({f"{prefix}fuser.{k}": v.detach().clone() for k, v in fuser.state_dict().items()})
    position_net = GLIGENTextBoundingboxProjection(positive_len=key_dim, out_dim=key_dim)
    with torch.no_grad():
        position_net.null_positive_feature.normal_()
        position_net.null_position_feature.normal_()
    state.update({f"position_net.{k}": v.detach().clone() for k, v in position_net.state_dict().items()})
    return state


def write_tiny_gligen(unet: torch.nn.Module, path: str | Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tiny_gligen_state(unet, seed).items()}, str(path))
    return path
