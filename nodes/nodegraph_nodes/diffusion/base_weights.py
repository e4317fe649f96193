"""Copying weights out of a cached model for the nodes that make new weights from it (merges, savers): the base
weights, however other prompts are using the model at the moment, and the same with a MODEL's or CLIP's LoRAs
baked in.

Under `serve --concurrency` another prompt may be sampling with a LoRA written into the cached weights
(patching.py). Its patching state then holds the originals of the weights it changed, and the weights change only
while the state is `busy` (a patch set being applied or removed). So a reader takes the state's lock, waits while
it is busy, copies the module and puts the saved originals back into the copy: the base weights, bit for bit, without
waiting for the other prompt's run to end. The wait needs nothing of the model cache (the patcher pins its LoRAs
before it goes busy), so a merge being made inside the cache (derived.py, under the cache's lock) may wait too.

Baking: a copy of the base with W + sum(strength * delta) written into it, computed exactly as the sampler patches
the cached weights (patching.apply), so a saved or merged LoRA model gives what the LoRA-loaded one gives.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from .patching import _shared, apply

ModelRef = Any  # model_cache.ModelRef (not imported: see patching.py)
ModelCache = Any


def plain_module(value: Any) -> torch.nn.Module:
    """The module itself when the cache lends a UNet through the side-by-side batcher (batching.BatchedUNet)."""
    from .batching import BatchedUNet

    return value.module if isinstance(value, BatchedUNet) else value


@contextmanager
def _quiet(ref: ModelRef) -> Iterator[dict[tuple[str, str], torch.Tensor]]:
    """Hold the patching state of `ref` while no patch set is being applied or removed; yields the originals of the
    weights the applied set (if any) replaced, {(component, module path): weight}."""
    state = _shared(ref.key)
    with state.cond:
        while state.busy:
            state.cond.wait()
        yield dict(state.saved)


def base_copies(ref: ModelRef, modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """CPU copies of the cached component `ref`'s `modules` ({"unet": ...} or a CLIP's {"l": ..., "g": ...}, named
    as patching names them) holding its base weights."""
    with _quiet(ref) as originals:
        copies = {name: copy.deepcopy(plain_module(module)).to("cpu") for name, module in modules.items()}
    with torch.no_grad():
        for (component, path), original in originals.items():
            if component in copies:
                copies[component].get_submodule(path).weight.copy_(original)
    return copies


@contextmanager
def base_states(ref: ModelRef, modules: dict[str, torch.nn.Module]) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
    """The state dicts of the cached component `ref`'s `modules` with their base weights, {name: state dict}, for
    reading inside the block (no patch set is applied or removed meanwhile; prompts that only use the model go on).
    Take no model-cache lock inside the block (enter `cache.use` before it)."""
    with _quiet(ref) as originals:
        states = {name: plain_module(module).state_dict() for name, module in modules.items()}
        for (component, path), original in originals.items():
            if component in states:
                key = f"{path}.weight"
                states[component][key] = original.to(states[component][key].device)
        yield states


def baked(cache: ModelCache, ref: ModelRef, patches: tuple[Any, ...],
          modules_of: Callable[[Any], dict[str, torch.nn.Module]]) -> dict[str, torch.nn.Module]:
    """CPU copies of the component's modules with `patches` (patching.LoraPatch) baked in; the cached base is
    only read."""
    with cache.use(ref) as value:
        copies = base_copies(ref, modules_of(value))
    if patches:
        with ExitStack() as stack:
            loras = [(stack.enter_context(cache.use(p.ref)), p.strength) for p in patches]
            apply(copies, loras)  # returns the replaced weights, which a copy does not need back
    return copies
