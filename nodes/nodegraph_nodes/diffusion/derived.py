"""Model components that are made, not read from one file: a CLIP assembled from text-encoder files
(CLIPLoader, DualCLIPLoader) and weight merges (ModelMergeSimple / Add / Subtract, CLIPMerge*).

Each lives in the model cache like a file's component, under a key that names its recipe: the kind, the inputs
(file identities, or the refs of the components merged), the numbers and, for a merge, the LoRAs each input
carries (baked into the merge, as ComfyUI merges the patched weights). The recipe is kept here, so a component
dropped from the cache (RAM budget, /free) is made again from its inputs when next used, and the same recipe in
another prompt finds the component already made. A merge is a new set of weights: per weight of model1 that model2
also has, `a * w1 + b * w2`, which is ComfyUI's patch arithmetic (its merge nodes add model2's weights to model1 as
patches with strength b on a model scaled by a; see the node docstrings for a and b). The inputs' weights are read
through base_weights.py: their base weights (or those with their LoRAs baked in), never another prompt's LoRA that
happens to be applied to the cached model at the time.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .base_weights import base_states, baked
from .patching import clip_modules, unet_modules
from .model_cache import FileIdentity, ModelCache, ModelRef

LOADER = "derived"
_PREFIX = "derived:"


@dataclass(frozen=True)
class Recipe:
    kind: str
    inputs: tuple[Any, ...]  # FileIdentity or ModelRef values
    params: tuple[Any, ...]


_recipes: dict[str, Recipe] = {}
_lock = threading.Lock()
BUILDERS: dict[str, Callable[[ModelCache, Recipe], dict[str, Any]]] = {}


def derived_refs(
    kind: str, inputs: tuple[Any, ...], params: tuple[Any, ...], components: tuple[str, ...]
) -> dict[str, ModelRef]:
    """Refs to the components of a recipe; nothing is made until one is used."""
    recipe = Recipe(kind, inputs, params)
    digest = hashlib.sha256(repr(recipe).encode()).hexdigest()[:20]
    with _lock:
        _recipes[digest] = recipe
    source = FileIdentity(f"{_PREFIX}{kind}:{digest}", 0, 0)
    return {c: ModelRef(source, c, LOADER) for c in components}


def build(cache: ModelCache, path: str) -> dict[str, Any]:
    """The model cache's reader for derived components: `path` is the recipe's name; inputs come from `cache`."""
    digest = path.rsplit(":", 1)[-1]
    recipe = _recipes.get(digest)
    if recipe is None:
        raise KeyError(f"no recipe for {path}")
    return BUILDERS[recipe.kind](cache, recipe)


# --- CLIP from text-encoder files ----------------------------------------------------------------------------------


def _build_clip(cache: ModelCache, recipe: Recipe) -> dict[str, Any]:
    from .split_files import read_text_encoder_file

    (names,) = recipe.params
    models, tokenizers = {}, {}
    for name, identity in zip(names, recipe.inputs, strict=True):
        encoder = read_text_encoder_file(identity.path)
        models[name], tokenizers[name] = encoder.model, encoder.tokenizer
    return {"clip": {"models": models, "tokenizers": tokenizers}}


BUILDERS["clip_files"] = _build_clip


# --- merges ------------------------------------------------------------------------------------------------------


class MergeError(ValueError):
    """Two models whose weights cannot be combined (another architecture)."""


def merge_state(target: torch.nn.Module, theirs: Mapping[str, torch.Tensor], a: float, b: float, what: str,
                skip: tuple[str, ...] = (), per_key: dict[str, tuple[float, float]] | None = None) -> None:
    """In place: every parameter / buffer of `target` that the other model's state dict `theirs` also has becomes
    `a * target + b * other`, computed in float32 and stored in the target's dtype; the others are left as they
    are. `per_key` gives other (a, b) for some keys."""
    mine = target.state_dict()
    misfits = [f"{k} {list(v.shape)} vs {list(theirs[k].shape)}" for k, v in mine.items()
               if k in theirs and v.shape != theirs[k].shape]
    if misfits:
        raise MergeError(f"{what}: the two models have different architectures ({len(misfits)} weights differ in "
                         f"shape, e.g. {misfits[:2]}); models of one family merge")
    with torch.no_grad():
        for key, value in mine.items():
            if key not in theirs or key.endswith(skip) or not value.is_floating_point():
                continue
            ka, kb = per_key.get(key, (a, b)) if per_key else (a, b)
            merged = ka * value.float() + kb * theirs[key].to(value.device, torch.float32)
            value.copy_(merged.to(value.dtype))


@contextmanager
def _weights(cache: ModelCache, ref: ModelRef, patches: tuple[Any, ...],
             modules_of: Callable[[Any], dict[str, torch.nn.Module]]) -> Iterator[dict[str, Mapping[str, torch.Tensor]]]:
    """The state dicts of a merge input's modules: its base weights read in place, or a copy with its LoRAs baked
    in."""
    if patches:
        yield {name: module.state_dict() for name, module in baked(cache, ref, patches, modules_of).items()}
    else:
        with cache.use(ref) as value, base_states(ref, modules_of(value)) as states:
            yield states


def _build_unet_merge(cache: ModelCache, recipe: Recipe) -> dict[str, Any]:
    ref1, ref2 = recipe.inputs
    a, b, patches1, patches2 = recipe.params
    merged = baked(cache, ref1, patches1, unet_modules)["unet"]
    with _weights(cache, ref2, patches2, unet_modules) as theirs:
        merge_state(merged, theirs["unet"], a, b, "model merge")
    return {"unet": merged}


def block_ratios(unet: torch.nn.Module, ratios: tuple[tuple[str, float], ...]) -> dict[str, tuple[float, float]]:
    """ModelMergeBlocks' ratio per weight: the ratio of the longest name in `ratios` that prefixes the weight's
    original-layout key (input_blocks..., middle_block..., out... / output_blocks...), else the first ratio."""
    from .keymap import unet_to_original

    state = unet.state_dict()
    original = {t.data_ptr(): k for k, t in unet_to_original(state, unet.config).items()}
    out = {}
    for key, tensor in state.items():
        name = original.get(tensor.data_ptr(), "")
        ratio, longest = ratios[0][1], 0
        for prefix, value in ratios:
            if name.startswith(prefix) and len(prefix) > longest:
                ratio, longest = value, len(prefix)
        out[key] = (ratio, 1.0 - ratio)
    return out


def _build_unet_block_merge(cache: ModelCache, recipe: Recipe) -> dict[str, Any]:
    ref1, ref2 = recipe.inputs
    ratios, patches1, patches2 = recipe.params
    merged = baked(cache, ref1, patches1, unet_modules)["unet"]
    per_key = block_ratios(merged, ratios)
    with _weights(cache, ref2, patches2, unet_modules) as theirs:
        merge_state(merged, theirs["unet"], 1.0, 0.0, "model merge", per_key=per_key)
    return {"unet": merged}


# ComfyUI leaves these out of CLIP merges: the position ids are a constant, logit_scale belongs to CLIP's image side.
CLIP_MERGE_SKIP = (".position_ids", ".logit_scale", "logit_scale")


def _build_clip_merge(cache: ModelCache, recipe: Recipe) -> dict[str, Any]:
    ref1, ref2 = recipe.inputs
    a, b, patches1, patches2 = recipe.params
    with cache.use(ref1) as parts1:
        tokenizers = dict(parts1["tokenizers"])
    models = baked(cache, ref1, patches1, clip_modules)
    with _weights(cache, ref2, patches2, clip_modules) as theirs:
        missing = sorted(set(models) - set(theirs))
        if missing:
            raise MergeError(f"clip merge: clip2 has no text encoder {missing[0]!r} (it has {sorted(theirs)})")
        for name, model in models.items():
            merge_state(model, theirs[name], a, b, f"clip merge ({name})", skip=CLIP_MERGE_SKIP)
    return {"clip": {"models": models, "tokenizers": tokenizers}}


BUILDERS["merge_unet"] = _build_unet_merge
BUILDERS["merge_unet_blocks"] = _build_unet_block_merge
BUILDERS["merge_clip"] = _build_clip_merge


def register(cache: ModelCache) -> None:
    cache.register_loader(LOADER, lambda path: build(cache, path))
