"""LoRA patches on cached models, ComfyUI's ModelPatcher idea: the base is loaded once and never copied.

A MODEL or CLIP handle carries a tuple of `LoraPatch` (a LoRA file in the model cache and a strength). The weights
are changed only while a node uses the model: `patched(cache, ref, patches, models_of)` pins the base in the cache,
saves the weights the LoRAs touch, writes W + sum(strength_i * delta_i) (computed in float32, cast once to the
weight's dtype, as ComfyUI does), yields, and copies the saved weights back, bit for bit. So two prompts with
different LoRAs on one checkpoint share its single copy in memory, the next prompt finds the base untouched, and
two LoRAs stack by adding their changes.

Prompts running side by side (`serve --concurrency`) share a model while they want the same patches (the same
LoRAs at the same strengths, or none): the first one in applies them, the last one out restores the base, and
their UNet calls can be batched together. A prompt that wants other patches waits until the model is free of the
current set, so nobody ever samples with another prompt's LoRA.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

# The model cache and its refs are only used here (cache.use(ref)), not imported: base_weights.py, which reads this
# module's state, is read by the merges the model cache makes (derived.py), and must not pull in the cache.

_states: dict[Any, "_Shared"] = {}
_states_guard = threading.Lock()


class _Shared:
    """Who uses one cached model now, with which patch set, and what the patches replaced."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.users = 0
        self.signature: tuple = ()
        self.busy = False  # patches being applied or the base being restored: nobody may enter
        self.saved: dict[tuple[str, str], torch.Tensor] = {}


def _shared(key: Any) -> _Shared:
    """The sharing state of the cached model `key` (made on first use; base_weights.py reads it too)."""
    with _states_guard:
        return _states.setdefault(key, _Shared())


@dataclass(frozen=True)
class LoraPatch:
    """A LoRA file (its model-cache handle) applied at `strength` to one side (model or CLIP)."""

    ref: Any  # the LoRA file's model_cache.ModelRef
    strength: float

    def cache_nbytes(self) -> int:
        return 0


def apply(models: dict[str, torch.nn.Module], loras: list[tuple[Any, float]]) -> dict[tuple[str, str], torch.Tensor]:
    """Write the stacked changes of `loras` [(LoraFile, strength)] into `models` in place; returns the saved
    originals {(component, module path): weight} for `restore`."""
    from .lora import match

    totals: dict[tuple[str, str], torch.Tensor] = {}
    for lora, strength in loras:
        if strength == 0:
            continue
        targets, _ = match(lora, models)
        for target in targets:
            weight = models[target.component].get_submodule(target.path).weight
            key = (target.component, target.path)
            if target.adapter.decomposes:  # DoRA: its change depends on the weight as the LoRAs before left it
                current = weight.detach().float() + totals[key] if key in totals else weight.detach().float()
                delta = target.adapter.change(current, strength)
            else:
                delta = target.adapter.delta(weight.shape).to(weight.device) * strength
            totals[key] = totals[key] + delta if key in totals else delta
    saved: dict[tuple[str, str], torch.Tensor] = {}
    with torch.no_grad():
        for key, delta in totals.items():
            weight = models[key[0]].get_submodule(key[1]).weight
            saved[key] = weight.detach().to("cpu", copy=True)  # kept off the accelerator, as ComfyUI keeps its backup
            weight.copy_((weight.float() + delta).to(weight.dtype))
    return saved


def restore(models: dict[str, torch.nn.Module], saved: dict[tuple[str, str], torch.Tensor]) -> None:
    with torch.no_grad():
        for (component, path), original in saved.items():
            weight = models[component].get_submodule(path).weight
            weight.copy_(original.to(weight.device))


def unet_modules(unet: Any) -> dict[str, torch.nn.Module]:
    """A UNet's patchable modules, named as LoRA patches name them."""
    return {"unet": unet}


def clip_modules(parts: Any) -> dict[str, torch.nn.Module]:
    """A CLIP's patchable text encoders ({"l": ..., "g": ...}), named as LoRA patches name them."""
    return dict(parts["models"])


@contextmanager
def patched(
    cache: Any,  # a model_cache.ModelCache
    ref: Any,  # a model_cache.ModelRef
    patches: tuple[LoraPatch, ...],
    models_of: Callable[[Any], dict[str, torch.nn.Module]],
    exclusive: bool = False,
) -> Iterator[Any]:
    """Use the cached component `ref` with `patches` applied; `models_of(value)` names its patchable modules
    ({"unet": unet} for a MODEL, {"l": ..., "g": ...} for a CLIP). `exclusive`: share the model with nobody."""
    state = _shared(ref.key)
    signature = tuple((p.ref.key, p.strength) for p in patches)
    if exclusive:
        signature += (object(),)  # equal to no other user's
    with cache.use(ref) as value, ExitStack() as lora_uses:
        models = models_of(value)
        # The LoRAs are pinned before the state is entered: applying and restoring then need nothing of the model
        # cache, so a reader that waits for them while holding the cache's lock (base_weights.py) cannot deadlock.
        loras = [(lora_uses.enter_context(cache.use(p.ref)), p.strength) for p in patches]
        with state.cond:
            while state.busy or (state.users and state.signature != signature):
                state.cond.wait()
            state.users += 1
            first = state.users == 1
            if first:
                state.signature, state.busy = signature, bool(patches)
        if first and patches:
            try:
                saved = apply(models, loras)
            except BaseException:
                with state.cond:
                    state.users -= 1
                    state.busy = False
                    state.cond.notify_all()
                raise
            with state.cond:
                state.saved, state.busy = saved, False
                state.cond.notify_all()
        try:
            yield value
        finally:
            with state.cond:
                state.users -= 1
                last = state.users == 0
                if last and state.saved:
                    state.busy = True
            if last:
                try:
                    if state.saved:
                        restore(models, state.saved)
                finally:
                    with state.cond:
                        state.saved, state.busy = {}, False
                        state.cond.notify_all()
