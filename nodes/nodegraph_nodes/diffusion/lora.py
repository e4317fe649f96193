"""LoRA files: read the layouts people publish, find the layers they change, and compute each layer's change.

A LoRA file holds, per adapted layer, a few small tensors under a module name and a role suffix. Layouts read:

- kohya / sd-scripts (A1111, ComfyUI): `lora_unet_<path with _>`, `lora_te_` (SD1), `lora_te1_` / `lora_te2_`
  (SDXL's two text encoders); roles `lora_down.weight`, `lora_up.weight`, `alpha`, and `lora_mid.weight` (LoCon's
  Tucker core for convolutions). The UNet path is the diffusers one for SD1 and the original (`input_blocks_4_1_...`)
  one for SDXL, as sd-scripts writes them.
- diffusers (`unet.`, `text_encoder.`, `text_encoder_2.` prefixes; `lora.up` / `lora.down`,
  `lora_linear_layer.up/down`, and the old attention-processor names `processor.to_q_lora.up`) and PEFT
  (`lora_A` / `lora_B`). diffusers' own key converters (`diffusers.utils.state_dict_utils`) turn these into PEFT
  names first, so the old spellings are handled as diffusers handles them.
- ComfyUI's own (`diffusion_model.<original path>`, `text_encoders.clip_l.transformer.<path>`).
- LyCORIS LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, optional `hada_t1` / `hada_t2`), LoKr (`lokr_w1`
  or `lokr_w1_a/b`, `lokr_w2` or `lokr_w2_a/b`, optional `lokr_t2`) and full differences (`diff`).

Which model layer a module name means is derived from the model itself, as ComfyUI does: every Linear / Conv2d of
the UNet and text encoders is listed under each name a layout gives it (diffusers path, kohya's underscored path,
the original-layout path through `keymap`), so a name is matched exactly or not at all. diffusers' kohya converter
(`lora_conversion_utils`) is not used for this: it raises on any role but `lora_up` / `lora_down` (so on LoHa, LoKr
and LoCon files), and drops DoRA scales; it is the independent reference in the parity tests instead.

A layer's change is ComfyUI's: `strength * alpha / rank * up @ down` (rank = down's output size, alpha = rank when
the file has none), reshaped to the weight; LoHa `(w1a @ w1b) * (w2a @ w2b)`; LoKr `kron(w1, w2)`.

DoRA (weight-decomposed LoRA; `Adapter.change`): the adapted weight W + d (d the change above, at strength 1) is
rescaled to a stored magnitude, and the layer moves `strength` of the way from W to it (ComfyUI's strength):
- `dora_scale` (kohya / LyCORIS / ComfyUI files), ComfyUI's weight_decompose: a scale shaped [1, in, ...] is per
  input channel and divides by the column norms of W + d; one shaped [out, 1, ...] is per output channel and divides
  by the row norms of W itself, the base weight (ComfyUI's choice; LyCORIS, which trains these files, takes W + d
  there too); float32's eps is added to the norms.
- `lora_magnitude_vector` (PEFT / diffusers files, [out]): PEFT's DoRA, divided by the row norms of W + d. ComfyUI
  does not read this key (it applies such files as plain LoRAs); nodegraph gives PEFT's result.
W is the weight as the LoRAs before this one left it, as ComfyUI applies patches one after another.
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# role suffixes, longest first so that "lora_up.weight" wins over "weight"
ROLES = tuple(sorted((
    "lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "dora_scale",
    "lora_B.weight", "lora_A.weight", "lora.up.weight", "lora.down.weight",
    "lora_linear_layer.up.weight", "lora_linear_layer.down.weight", "lora_magnitude_vector",
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
    "lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
    "diff", "diff_b",
), key=len, reverse=True))
# every spelling of up / down -> kohya's
_CANONICAL = {
    "lora_B.weight": "lora_up.weight", "lora_A.weight": "lora_down.weight",
    "lora.up.weight": "lora_up.weight", "lora.down.weight": "lora_down.weight",
    "lora_linear_layer.up.weight": "lora_up.weight", "lora_linear_layer.down.weight": "lora_down.weight",
}

# Which model a module-name prefix addresses: "unet", or a text encoder by its role name ("l", "g").
# (prefix, component); the text-encoder prefixes are tried per family (SD1 reads lora_te_ as CLIP-L).
UNET_PREFIXES = ("lora_unet_", "unet.", "diffusion_model.", "model.diffusion_model.")
TEXT_PREFIXES: dict[str, tuple[str, ...]] = {
    "l": ("lora_te_", "lora_te1_", "text_encoder.", "text_encoders.clip_l.transformer.", "clip_l."),
    "g": ("lora_te2_", "text_encoder_2.", "text_encoders.clip_g.transformer.", "clip_g."),
}


class LoraError(ValueError):
    """A LoRA file that cannot be applied, with what was found."""


@dataclass
class Adapter:
    """The tensors of one adapted layer, keyed by kohya-style role ("lora_up.weight", "alpha", "hada_w1_a"...)."""

    name: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        roles = self.tensors
        if "lora_up.weight" in roles and "lora_down.weight" in roles:
            return "lora"
        if "hada_w1_a" in roles:
            return "loha"
        if "lokr_w1" in roles or "lokr_w1_a" in roles:
            return "lokr"
        if "diff" in roles:
            return "diff"
        return "unknown"

    def fits(self, shape: torch.Size) -> bool:
        """Whether the adapter changes a weight of this shape (cheap for LoRA; others are computed once)."""
        if self.kind == "lora":
            up, down = self.tensors["lora_up.weight"], self.tensors["lora_down.weight"]
            inner = down[0].numel() if "lora_mid.weight" not in self.tensors else \
                down.shape[1] * self.tensors["lora_mid.weight"][0, 0].numel()
            return up.shape[0] == shape[0] and inner == torch.Size(shape[1:]).numel()
        try:
            self.delta(shape)
        except (RuntimeError, LoraError):
            return False
        return True

    @property
    def decomposes(self) -> bool:
        """A DoRA adapter: its change depends on the weight it is applied to (see the module doc)."""
        return "dora_scale" in self.tensors or "lora_magnitude_vector" in self.tensors

    def change(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The change to `weight` (float32, the current weight) at `strength`, on the weight's device."""
        delta = self.delta(weight.shape).to(weight.device)
        if not self.decomposes:
            return delta * strength
        adapted = weight + delta
        rows = lambda w: w.reshape(w.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (w.dim() - 1))  # noqa: E731
        if "dora_scale" in self.tensors:
            scale = self.tensors["dora_scale"].float().to(weight.device)
            if scale.shape[0] == weight.shape[0]:  # per output channel: ComfyUI divides by the base weight's norms
                norm = rows(weight)
            else:  # per input channel: the adapted weight's column norms
                norm = rows(adapted.transpose(0, 1)).transpose(0, 1)
            if scale.numel() == norm.numel():  # a flat [out] or [in] scale: one value per norm
                scale = scale.reshape(norm.shape)
            adapted = adapted * (scale / (norm + torch.finfo(torch.float32).eps))
        else:
            magnitude = self.tensors["lora_magnitude_vector"].float().to(weight.device)
            adapted = adapted * (magnitude.reshape(-1, *[1] * (weight.dim() - 1)) / rows(adapted))
        return (adapted - weight) * strength

    def delta(self, shape: torch.Size) -> torch.Tensor:
        """The change of the layer's weight at strength 1, float32, shaped `shape`."""
        t = {k: v.float() for k, v in self.tensors.items()}
        alpha = float(t["alpha"]) if "alpha" in t else None
        kind = self.kind
        if kind == "lora":
            up, down = t["lora_up.weight"], t["lora_down.weight"]
            rank = down.shape[0]
            if "lora_mid.weight" in t:  # LoCon Tucker: W[o,i,h,w] = sum up[o,a] mid[a,b,h,w] down[b,i]
                out = torch.einsum("oa,abhw,bi->oihw", up.flatten(1), t["lora_mid.weight"], down.flatten(1))
            else:
                out = up.flatten(1) @ down.flatten(1)
            return out.reshape(shape) * ((alpha / rank) if alpha is not None else 1.0)
        if kind == "loha":
            rank = t["hada_w1_b"].shape[0]
            if "hada_t1" in t:
                w1 = torch.einsum("ijkl,jr,ip->prkl", t["hada_t1"], t["hada_w1_b"], t["hada_w1_a"])
                w2 = torch.einsum("ijkl,jr,ip->prkl", t["hada_t2"], t["hada_w2_b"], t["hada_w2_a"])
            else:
                w1 = t["hada_w1_a"] @ t["hada_w1_b"]
                w2 = t["hada_w2_a"] @ t["hada_w2_b"]
            return (w1 * w2).reshape(shape) * ((alpha / rank) if alpha is not None else 1.0)
        if kind == "lokr":
            rank = None
            if "lokr_w1" in t:
                w1 = t["lokr_w1"]
            else:
                rank = t["lokr_w1_b"].shape[0]
                w1 = t["lokr_w1_a"] @ t["lokr_w1_b"]
            if "lokr_w2" in t:
                w2 = t["lokr_w2"]
            else:
                rank = t["lokr_w2_b"].shape[0]
                if "lokr_t2" in t:
                    w2 = torch.einsum("ijkl,jr,ip->prkl", t["lokr_t2"], t["lokr_w2_b"], t["lokr_w2_a"])
                else:
                    w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
            if w2.dim() == 4:
                w1 = w1[:, :, None, None]
            scale = alpha / rank if (alpha is not None and rank is not None) else 1.0
            return torch.kron(w1, w2).reshape(shape) * scale
        if kind == "diff":
            return t["diff"].reshape(shape)
        raise LoraError(f"{self.name}: no LoRA, LoHa, LoKr or diff weights (roles {sorted(self.tensors)})")


@dataclass
class LoraFile:
    """The adapters of a file, by module name as written in the file (prefix included, role removed)."""

    source: str
    adapters: dict[str, Adapter]

    def cache_nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for a in self.adapters.values() for t in a.tensors.values())


def _split(key: str) -> tuple[str, str] | None:
    for role in ROLES:
        if key.endswith("." + role):
            return key[: -len(role) - 1], _CANONICAL.get(role, role)
    return None


def _normalise_diffusers_names(keys: Iterable[str]) -> dict[str, str]:
    """old diffusers / PEFT key -> PEFT key, through diffusers' own converters (identity where they change nothing).

    UNet keys: `convert_unet_state_dict_to_peft` (drops `.processor.`, `to_q_lora.up` -> `to_q.lora_B`); text
    encoder keys: `convert_state_dict_to_peft` for the old (`to_q_lora`) and new (`lora_linear_layer`) spellings.
    """
    from diffusers.utils.state_dict_utils import (
        DIFFUSERS_OLD_TO_PEFT,
        DIFFUSERS_TO_PEFT,
        convert_state_dict,
        convert_unet_state_dict_to_peft,
    )

    out = {}
    for key in keys:
        if key.startswith(("lora_unet_", "lora_te")):
            out[key] = key
        elif key.startswith(("text_encoder.", "text_encoder_2.")):
            table = DIFFUSERS_OLD_TO_PEFT if "_lora." in key else DIFFUSERS_TO_PEFT
            (out[key],) = convert_state_dict({key: None}, table)
        else:
            (out[key],) = convert_unet_state_dict_to_peft({key: None})
    return out


def parse_lora(state: Mapping[str, torch.Tensor], source: str = "LoRA") -> LoraFile:
    """Group a LoRA state dict into adapters; raises LoraError for a file with no adapter."""
    renamed = _normalise_diffusers_names(state)
    adapters: dict[str, Adapter] = {}
    unknown = []
    for key, value in state.items():
        split = _split(renamed[key])
        if split is None:
            unknown.append(key)
            continue
        name, role = split
        adapters.setdefault(name, Adapter(name)).tensors[role] = value
    adapters = {name: a for name, a in adapters.items() if a.kind != "unknown" or log.warning(
        "%s: %s has no complete adapter (roles %s), skipped", source, name, sorted(a.tensors)) }
    if unknown:
        log.warning("%s: %d keys of no known LoRA role were ignored, e.g. %s", source, len(unknown), unknown[:3])
    if not adapters:
        raise LoraError(f"{source}: no LoRA weights found (keys e.g. {list(state)[:3]}); expected kohya "
                        "(lora_unet_*.lora_down.weight), diffusers (unet.*.lora.down.weight) or PEFT (lora_A) keys")
    return LoraFile(source, adapters)


def read_lora_file(path: str | Path) -> LoraFile:
    """Read a LoRA file: .safetensors by content, or a pickle through torch's weights-only unpickler."""
    from .weights_files import load_state_dict

    return parse_lora(load_state_dict(path, allow_pickle=True), source=Path(path).name)


# --- which model layer each name means ---------------------------------------------------------------------------


def _adaptable(model: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Module]]:
    for path, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            yield path, module


def unet_names(unet: torch.nn.Module) -> dict[str, str]:
    """Every name a LoRA layout gives a UNet layer -> its diffusers module path."""
    from .keymap import unet_to_original

    config = dict(unet.config)
    names: dict[str, str] = {}
    for path, _ in _adaptable(unet):
        spellings = [path, "lora_unet_" + path.replace(".", "_")]
        try:
            (original,) = unet_to_original({path + ".weight": None}, config)
        except KeyError:
            original = None
        if original is not None:
            original = original.removesuffix(".weight")
            spellings += ["lora_unet_" + original.replace(".", "_"), original]
        for prefix in ("unet.", "diffusion_model.", "model.diffusion_model."):
            spellings.append(prefix + (original if prefix != "unet." and original else path))
        for s in spellings:
            names.setdefault(s, path)
    return names


def text_encoder_names(model: torch.nn.Module, role: str) -> dict[str, str]:
    """Every name a LoRA layout gives a text-encoder layer of encoder `role` ("l", "g") -> its module path.

    transformers 5 lists `CLIPTextModel`'s layers without the `text_model.` level (the projection model keeps it),
    while every LoRA layout spells it, so both are accepted."""
    names: dict[str, str] = {}
    for path, _ in _adaptable(model):
        full = path if path.startswith("text_model.") or path == "text_projection" else "text_model." + path
        short = full.removeprefix("text_model.")
        for prefix in TEXT_PREFIXES[role]:
            if prefix.startswith("lora_te"):
                names.setdefault(prefix + full.replace(".", "_"), path)
            else:
                names.setdefault(prefix + full, path)
                names.setdefault(prefix + short, path)
    return names


@dataclass(frozen=True)
class Target:
    """A layer to change: the model it belongs to ("unet" or an encoder role), its module path, the adapter."""

    component: str
    path: str
    adapter: Adapter


# name tables per model object: listing a real UNet's layers under every spelling takes longer than the patching
_tables: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, dict[str, str]]]" = weakref.WeakKeyDictionary()


def _names(model: torch.nn.Module, component: str) -> dict[str, str]:
    per_model = _tables.setdefault(model, {})
    if component not in per_model:
        per_model[component] = unet_names(model) if component == "unet" else text_encoder_names(model, component)
    return per_model[component]


def match(lora: LoraFile, models: Mapping[str, torch.nn.Module]) -> tuple[list[Target], list[str]]:
    """The layers of `models` ({"unet": ..., "l": ..., "g": ...}) that `lora` changes, and its names that fit none.

    A name that fits a layer of another shape (a LoRA for another model family) counts as not fitting.
    """
    tables = {component: _names(model, component) for component, model in models.items()}
    targets, unmatched = [], []
    for name, adapter in lora.adapters.items():
        hit = None
        for component, table in tables.items():
            if name in table:
                hit = (component, table[name])
                break
        if hit is None:
            unmatched.append(name)
            continue
        if not adapter.fits(models[hit[0]].get_submodule(hit[1]).weight.shape):
            unmatched.append(name)
            continue
        targets.append(Target(hit[0], hit[1], adapter))
    return targets, unmatched


def describe_match(lora: LoraFile, models: Mapping[str, torch.nn.Module]) -> dict[str, int]:
    """How many layers of each model `lora` changes; logs the names that fit nothing (ComfyUI's
    "lora key not loaded")."""
    targets, unmatched = match(lora, models)
    if unmatched and targets:
        log.warning("%s: %d of its %d layers fit no layer of the model and are not applied, e.g. %s",
                    lora.source, len(unmatched), len(lora.adapters), unmatched[:3])
    counts: dict[str, int] = {}
    for t in targets:
        counts[t.component] = counts.get(t.component, 0) + 1
    return counts
