"""GLIGEN (Li et al. 2023, "Grounded Language-to-Image Generation"): text boxes that place a phrase in a region,
through gated self-attention layers added to every transformer block of an SD1 / SD2 UNet.

The file (ComfyUI's models/gligen, e.g. gligen_sd14_textbox_pruned.safetensors) holds, per transformer block of the
UNet, the block's gated layer under `<original block>.transformer_blocks.0.fuser.*` (`input_blocks.1.1.`, ...,
`middle_block.1.`, `output_blocks.3.1.`, ...) and the box encoder under `position_net.*`. Those layers are
diffusers' `GatedSelfAttentionDense` and `GLIGENTextBoundingboxProjection` (the same parameter names), so they are
built from diffusers and loaded as they are.

How a box acts (ComfyUI's semantics): GLIGENTextBoxApply keeps (pooled text embedding of the phrase, height,
width, y, x) in latent cells (pixels // 8) on each conditioning it is given; when the sampler runs the UNet for such a
conditioning (and only for it: a negative without boxes runs plain), the boxes become xyxy fractions of the latent
being denoised (the area's crop under area conditioning), are padded to 30 with null objects, encoded by the
position net, and every transformer block runs its gated layer after its self-attention. The cached UNet itself is
not changed: diffusers' blocks call `self.fuser(hidden, objs)` only when a call passes GLIGEN arguments, so each
block gets a small dispatcher (not a module, no weights) that hands the call to the gated layer of the GLIGEN model
that came with the call. Prompts with other GLIGEN models, or none, can use the same UNet at the same time.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MAX_OBJECTS = 30  # boxes per conditioning the position net was trained with (ComfyUI's max_objs)
_BLOCK = re.compile(r"^(?:model\.diffusion_model\.)?(input_blocks\.(\d+)|middle_block|output_blocks\.(\d+))\.")


class GligenError(ValueError):
    """A GLIGEN file or use nodegraph cannot serve, with the reason."""


class GligenModel(torch.nn.Module):
    """The gated self-attention layers, one per UNet transformer block in the UNet's order, and the box encoder."""

    def __init__(self, fusers: list[torch.nn.Module], position_net: torch.nn.Module, key_dim: int):
        super().__init__()
        self.fusers = torch.nn.ModuleList(fusers)
        self.position_net = position_net
        self.key_dim = key_dim


def _heads(query_dim: int, key_dim: int) -> int:
    """Attention heads of a gated layer; the file does not say. ComfyUI's rule for the published models: 8 heads
    for SD1 (text width 768), 64-channel heads for SD2 (1024). Other text widths (tiny test models) get SD1's 8, as
    diffusers' gated UNet gives every block's gated layer the block's own heads (8 in SD1-shaped configs)."""
    if key_dim == 1024 and query_dim % 64 == 0:
        return query_dim // 64
    return 8


def read_gligen_file(path: str | Path) -> GligenModel:
    """Build the GLIGEN layers from a safetensors file in ComfyUI's layout (see the module's docstring)."""
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    from .weights_files import load_state_dict

    # pickled files are read through torch's weights-only unpickler, as ComfyUI reads them (weights_files.py)
    state = load_state_dict(path, allow_pickle=True)
    groups: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if ".fuser." not in key:
            continue
        found = _BLOCK.match(key)
        if found is None:
            raise GligenError(f"{Path(path).name}: gated layer {key!r} is in no UNet block")
        order = (0, int(found.group(2))) if found.group(2) else (2, int(found.group(3))) if found.group(3) else (1, 0)
        groups.setdefault(order, {})[key.split(".fuser.", 1)[1]] = value
    if not groups or "position_net.null_positive_feature" not in state:
        raise GligenError(f"{Path(path).name}: not a GLIGEN model (no `...fuser.*` layers and `position_net.*`)")
    fusers, key_dim = [], 0
    for order in sorted(groups):
        layer = groups[order]
        query_dim, key_dim = layer["linear.weight"].shape
        heads = _heads(query_dim, key_dim)
        fuser = GatedSelfAttentionDense(query_dim, key_dim, heads, query_dim // heads)
        fuser.load_state_dict(layer, strict=True)
        fusers.append(fuser)
    positive_len = state["position_net.null_positive_feature"].shape[0]
    out_dim = state["position_net.linears.4.weight"].shape[0]
    position_net = GLIGENTextBoundingboxProjection(positive_len=positive_len, out_dim=out_dim)
    position_net.load_state_dict({k.removeprefix("position_net."): v for k, v in state.items()
                                  if k.startswith("position_net.")}, strict=True)
    return GligenModel(fusers, position_net, int(key_dim)).eval()


# --- the UNet side: dispatchers on the cached UNet's transformer blocks ---------------------------------------------


@dataclass
class _Objects:
    """What the position net returns for one call: the GLIGEN model that made it and its object tokens."""

    model: GligenModel
    tokens: torch.Tensor


class _PositionNet:
    """Stands in for a gated UNet's `position_net`: encodes the call's boxes with the call's own GLIGEN model."""

    def __call__(self, boxes, masks, positive_embeddings, gligen_model: GligenModel) -> _Objects:
        tokens = gligen_model.position_net(boxes=boxes, masks=masks, positive_embeddings=positive_embeddings)
        return _Objects(gligen_model, tokens)


class _Fuser:
    """Stands in for a gated transformer block's `fuser`: runs the call's GLIGEN layer for this block."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, hidden: torch.Tensor, objects: _Objects) -> torch.Tensor:
        fuser = objects.model.fusers[self.index]
        return fuser(hidden, objects.tokens.to(hidden.device, hidden.dtype))


_install_lock = threading.Lock()


def transformer_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's transformer blocks in the order it runs them (input side, middle, output side)."""
    from diffusers.models.attention import BasicTransformerBlock

    # not unet.modules(): diffusers registers up_blocks before mid_block
    parts = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
    return [m for part in parts for m in part.modules() if isinstance(m, BasicTransformerBlock)]


def _install(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """Give the UNet's blocks their dispatchers (once; plain attributes, so the weights and state dict are
    unchanged)."""
    blocks = transformer_blocks(unet)
    with _install_lock:
        if not isinstance(getattr(unet, "position_net", None), _PositionNet):
            if hasattr(unet, "position_net"):
                raise GligenError("this UNet has GLIGEN layers of its own; load the plain checkpoint")
            for index, block in enumerate(blocks):
                block.fuser = _Fuser(index)
            unet.position_net = _PositionNet()
    return blocks


def unet_kwargs(unet: Any, gligen_model: GligenModel, boxes: tuple, shape: torch.Size) -> dict[str, Any]:
    """The extra UNet-call arguments that apply `boxes` [(pooled [1, D], height, width, y, x) in latent cells] with
    `gligen_model` to a call on latents of `shape` [B, C, h, w]."""
    from .base_weights import plain_module

    if not isinstance(gligen_model, GligenModel):
        raise GligenError("a GLIGEN model reached the UNet call unresolved (sampling path without gligen.resolve)")
    blocks = _install(plain_module(unet))
    if len(blocks) != len(gligen_model.fusers):
        raise GligenError(f"the GLIGEN model has {len(gligen_model.fusers)} gated layers, the UNet "
                          f"{len(blocks)} transformer blocks: it was made for another model")
    for block, fuser in zip(blocks, gligen_model.fusers):
        if block.norm1.normalized_shape[0] != fuser.linear.out_features:
            raise GligenError(f"the GLIGEN model's layers are {fuser.linear.out_features} wide where the UNet's "
                              f"are {block.norm1.normalized_shape[0]}: it was made for another model")
    if len(boxes) > MAX_OBJECTS:
        raise GligenError(f"{len(boxes)} GLIGEN boxes on one conditioning; at most {MAX_OBJECTS}")
    batch, _, height, width = shape
    param = next(gligen_model.parameters())
    xyxy = torch.zeros(MAX_OBJECTS, 4)
    masks = torch.zeros(MAX_OBJECTS)
    embeds = torch.zeros(MAX_OBJECTS, gligen_model.key_dim)
    for i, (pooled, h, w, y, x) in enumerate(boxes):
        if pooled.numel() != gligen_model.key_dim:
            raise GligenError(f"a box's text embedding is {pooled.numel()} wide where the GLIGEN model takes "
                              f"{gligen_model.key_dim}: the CLIP and the GLIGEN model are for different models")
        xyxy[i] = torch.tensor([x / width, y / height, (x + w) / width, (y + h) / height])
        masks[i] = 1.0
        embeds[i] = pooled.reshape(-1).float()
    to = dict(device=param.device, dtype=param.dtype)
    return {"cross_attention_kwargs": {"gligen": {
        "boxes": xyxy.unsqueeze(0).repeat(batch, 1, 1).to(**to),
        "masks": masks.unsqueeze(0).repeat(batch, 1).to(**to),
        "positive_embeddings": embeds.unsqueeze(0).repeat(batch, 1, 1).to(**to),
        "gligen_model": gligen_model,
    }}}


# --- the values between nodes, loading and applying -----------------------------------------------------------------


@dataclass(frozen=True)
class GligenHandle:
    """GLIGEN: a GLIGEN model in the model cache (its gated layers and box encoder)."""

    ref: Any
    layers: int

    def cache_nbytes(self) -> int:
        return 0


def _read(path: str) -> dict[str, Any]:
    model = read_gligen_file(path)
    return {"gligen": model, "info": {"layers": len(model.fusers)}}


def _with_reader(cache: Any) -> Any:
    """The model cache, able to read GLIGEN files (registered on first use; no edit to the shared readers)."""
    if "gligen" not in cache.loaders:
        cache.register_loader("gligen", _read)
    return cache


def load_gligen(runtime: Any, path: Path) -> GligenHandle:
    """GLIGENLoader: the file is read now, so a wrong file fails in the loader node."""
    from .cache_readers import model_cache

    cache = _with_reader(model_cache(runtime))
    refs = cache.refs(path, "gligen", ("gligen", "info"))
    with cache.use(refs["info"]) as info:
        return GligenHandle(refs["gligen"], info["layers"])


def resolve(stack: Any, cache: Any, cond: Any) -> Any:
    """`cond` with its GLIGEN handle swapped for the model, pinned in the cache until `stack` closes (the sampler
    does this before sampling, as for ControlNets)."""
    from dataclasses import replace

    handle, boxes = cond.gligen
    if not isinstance(handle, GligenHandle):
        return cond
    model = stack.enter_context(_with_reader(cache).use(handle.ref))
    return replace(cond, gligen=(model, boxes))
