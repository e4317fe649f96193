"""What the component nodes do: load a UNet or text encoders from files of their own, merge weights, save
components, and read an original (LDM / SGM) YAML config for CheckpointLoader.

Handles stay small (handles.py): a loaded or merged component lives in the model cache, a merge as a derived
component made from its inputs (derived.py).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from . import derived
from .cache_readers import model_cache
from .handles import ClipHandle, ModelHandle, VaeHandle
from .model_cache import FileIdentity

if TYPE_CHECKING:
    from nodegraph.engine import Runtime

# The CLIP a set of text encoders makes, by loader type and the encoders' kinds (sorted): the family whose text
# conditioning it gives. ComfyUI's stable_diffusion type picks by the file: CLIP-L -> SD1, OpenCLIP-H -> SD2,
# OpenCLIP-bigG alone -> the SDXL refiner's CLIP; sdxl takes CLIP-L and bigG in either order.
CLIP_RECIPES: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {
    ("stable_diffusion", ("l",)): ("sd1", ("l",)),
    ("stable_diffusion", ("h",)): ("sd2", ("h",)),
    ("stable_diffusion", ("g",)): ("sdxl_refiner", ("g",)),
    ("sdxl", ("g", "l")): ("sdxl", ("l", "g")),
}


class ComponentError(ValueError):
    """A component request nodegraph cannot serve, with what it supports."""


def load_unet(runtime: Runtime, path: Path, weight_dtype: str) -> ModelHandle:
    if weight_dtype != "default":
        raise ComponentError(
            f"weight_dtype {weight_dtype!r}: fp8 weight storage is not supported; use 'default' (weights run in "
            "the precision the server was started with, --precision)"
        )
    cache = model_cache(runtime)
    refs = cache.refs(path, "unet", ("unet", "info"))
    with cache.use(refs["info"]) as info:
        return ModelHandle(refs["unet"], info["family"], info["scheduler_config"], info["latent_scale"])


def load_clip(runtime: Runtime, paths: list[Path], clip_type: str) -> ClipHandle:
    """CLIPLoader / DualCLIPLoader: the files are read now (so a wrong file fails in the loader node)."""
    from .split_files import text_encoder_kind

    supported = ", ".join(f"{t} ({'+'.join(k)})" for t, k in CLIP_RECIPES)
    kinds = [text_encoder_kind(path) for path in paths]
    key = (clip_type, tuple(sorted(kinds)))
    if key not in CLIP_RECIPES:
        names = " + ".join(f"{p.name} ({_KIND_NAMES[k]})" for p, k in zip(paths, kinds))
        raise ComponentError(
            f"type {clip_type!r} with {names}: not a text-encoder combination nodegraph runs (it runs the SD1, SD2 "
            f"and SDXL families); supported: {supported}"
        )
    family, order = CLIP_RECIPES[key]
    by_kind = dict(zip(kinds, paths))
    from .cache_readers import ENCODER_NAMES

    names = ENCODER_NAMES[family]  # the names the text encoder code uses for this family's encoders
    inputs = tuple(FileIdentity.of(by_kind[k]) for k in order)
    ref = derived.derived_refs("clip_files", inputs, (names,), ("clip",))["clip"]
    model_cache(runtime).preload(ref)  # read the weights now, so a damaged file fails in the loader node
    return ClipHandle(ref, family)


_KIND_NAMES = {"l": "CLIP-L", "h": "OpenCLIP-H", "g": "OpenCLIP-bigG"}


# --- merges --------------------------------------------------------------------------------------------------------


def merge_models(runtime: Runtime, model1: ModelHandle, model2: ModelHandle, a: float, b: float,
                 node: str) -> ModelHandle:
    """A MODEL whose weights are `a * model1 + b * model2` (model1's other settings kept). Each input's LoRAs are
    baked into the merge (the result carries none), as ComfyUI merges the patched weights."""
    ref = derived.derived_refs("merge_unet", (model1.ref, model2.ref),
                               (float(a), float(b), model1.patches, model2.patches), ("unet",))["unet"]
    model_cache(runtime).preload(ref)  # make it now, so a mismatch fails in this node
    return replace(model1, ref=ref, patches=())


def merge_model_blocks(runtime: Runtime, model1: ModelHandle, model2: ModelHandle,
                       ratios: dict[str, float]) -> ModelHandle:
    """ModelMergeBlocks: per UNet block group, ratio * model1 + (1 - ratio) * model2 (LoRAs baked in)."""
    params = tuple((name, float(value)) for name, value in ratios.items())
    ref = derived.derived_refs("merge_unet_blocks", (model1.ref, model2.ref),
                               (params, model1.patches, model2.patches), ("unet",))["unet"]
    model_cache(runtime).preload(ref)
    return replace(model1, ref=ref, patches=())


def merge_clips(runtime: Runtime, clip1: ClipHandle, clip2: ClipHandle, a: float, b: float, node: str) -> ClipHandle:
    ref = derived.derived_refs("merge_clip", (clip1.ref, clip2.ref),
                               (float(a), float(b), clip1.patches, clip2.patches), ("clip",))["clip"]
    model_cache(runtime).preload(ref)
    return replace(clip1, ref=ref, patches=())


# --- saving --------------------------------------------------------------------------------------------------------


def baked_unet(runtime: Runtime, model: ModelHandle) -> Any:
    """A CPU copy of the MODEL's UNet with its LoRAs baked in (ComfyUI saves the patched weights), read from the
    cached base's own weights even while another prompt samples with a LoRA applied to it (base_weights.py)."""
    from .base_weights import baked
    from .patching import unet_modules

    return baked(model_cache(runtime), model.ref, model.patches, unet_modules)["unet"]


def baked_clip(runtime: Runtime, clip: ClipHandle) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CLIP's text encoders as CPU copies with its LoRAs baked in, and its tokenizers."""
    from .base_weights import baked
    from .patching import clip_modules

    cache = model_cache(runtime)
    with cache.use(clip.ref) as parts:
        tokenizers = dict(parts["tokenizers"])
    return baked(cache, clip.ref, clip.patches, clip_modules), tokenizers


def _modelspec(model: ModelHandle) -> dict[str, str]:
    """The modelspec fields ComfyUI's CheckpointSave writes (architecture for SDXL, the prediction type)."""
    out: dict[str, str] = {}
    architecture = {"sdxl": "stable-diffusion-xl-v1-base", "sdxl_refiner": "stable-diffusion-xl-v1-refiner"}
    if model.family in architecture:
        out.update({"modelspec.architecture": architecture[model.family], "modelspec.sai_model_spec": "1.0.0",
                    "modelspec.implementation": "sgm"})
    prediction = model.scheduler_config.get("prediction_type", "epsilon")
    out["modelspec.predict_key"] = {"epsilon": "epsilon", "v_prediction": "v"}.get(prediction, prediction)
    return out


def save_checkpoint(runtime: Runtime, model: ModelHandle, clip: ClipHandle, vae: VaeHandle, path: Path,
                    metadata: Mapping[str, str]) -> Path:
    """One original-layout checkpoint file (the layout CheckpointLoaderSimple reads) with our config record."""
    import torch

    from .families import FAMILIES
    from .keymap import _config_dict, checkpoint_state_dict
    from .cache_readers import ENCODER_NAMES
    from .split_layout import save
    from .tiny import Components
    from .tokenizer import tokenizer_spec

    family = FAMILIES[model.family]
    clip_family = {"sd2_base": "sd2"}.get(clip.family, clip.family)
    if clip_family != {"sd2_base": "sd2"}.get(model.family, model.family):
        raise ComponentError(f"CheckpointSave: the CLIP is {clip.family}'s, the MODEL {model.family}'s; a checkpoint "
                             "holds one family's parts")
    cache = model_cache(runtime)
    unet = baked_unet(runtime, model)
    encoders, tokenizers = baked_clip(runtime, clip)
    with cache.use(vae.ref) as vae_model:  # a VAE is never patched: read in place
        names = ENCODER_NAMES[model.family]
        components = Components(
            model.family, unet, vae_model, [encoders[n] for n in names], [tokenizers[n] for n in names],
            dict(model.scheduler_config),
        )
        state = checkpoint_state_dict(components)
        if model.scheduler_config.get("prediction_type") == "v_prediction":
            state["v_pred"] = torch.tensor([])  # how ComfyUI marks v-prediction checkpoints
        payload = {
            "kind": "checkpoint", "family": model.family, "unet": _config_dict(unet.config),
            "vae": _config_dict(vae_model.config),
            "text_encoders": {
                s.subfolder: _config_dict(e.config) for s, e in zip(family.text_encoders, components.text_encoders)
            },
            "tokenizers": {
                s.subfolder: tokenizer_spec(t) for s, t in zip(family.text_encoders, components.tokenizers)
            },
            "scheduler": dict(model.scheduler_config),
        }
        return save(state, path, payload, {**_modelspec(model), **metadata})


def save_unet(runtime: Runtime, model: ModelHandle, path: Path, metadata: Mapping[str, str]) -> Path:
    from .split_layout import write_unet_file

    return write_unet_file(baked_unet(runtime, model), model.family, model.scheduler_config, path, True,
                           {**_modelspec(model), **metadata})


def save_clip(runtime: Runtime, clip: ClipHandle, next_path: Any, filename_prefix: str,
              metadata: Mapping[str, str]) -> list[Path]:
    """One file per text encoder, `<prefix>_clip_l`, `_clip_h`, `_clip_g` as ComfyUI's CLIPSave names them.
    `next_path(prefix)` gives the file for a prefix (the output folder's counter)."""
    from .cache_readers import ENCODER_NAMES
    from .split_layout import FAMILY_ENCODER_KINDS, write_text_encoder_file

    written = []
    encoders, tokenizers = baked_clip(runtime, clip)
    for name, kind in zip(ENCODER_NAMES[clip.family], FAMILY_ENCODER_KINDS[clip.family], strict=True):
        path = next_path(f"{filename_prefix}_clip_{kind}")
        written.append(write_text_encoder_file(encoders[name], tokenizers[name], kind, path, metadata))
    return written


def save_vae(runtime: Runtime, vae: VaeHandle, path: Path, metadata: Mapping[str, str]) -> Path:
    from .keymap import _config_dict, vae_to_original
    from .split_layout import save

    with model_cache(runtime).use(vae.ref) as model:
        state = vae_to_original(model.state_dict(), model.config)
        return save(state, path, {"kind": "vae", "vae": _config_dict(model.config)}, metadata)


# --- original YAML configs (CheckpointLoader) ------------------------------------------------------------------


def read_original_config(path: Path) -> dict[str, Any]:
    """What an original LDM / SGM inference YAML says that a checkpoint's keys cannot: the prediction type and the
    latent scale factor. {"prediction_type": ..., "latent_scale": ...} with the keys the file sets."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ComponentError(f"config {path.name}: not a readable YAML file: {exc}") from None
    params = (data or {}).get("model", {}).get("params", {}) if isinstance(data, dict) else {}
    if not isinstance(params, dict):
        raise ComponentError(f"config {path.name}: no model.params section (not an LDM / SGM inference config)")
    out: dict[str, Any] = {}
    if "parameterization" in params:  # LDM (SD1 / SD2): "eps" (the default) or "v"
        out["prediction_type"] = "v_prediction" if params["parameterization"] == "v" else "epsilon"
    scaling = str(params.get("denoiser_config", {}).get("params", {}).get("scaling_config", {}).get("target", ""))
    if scaling:  # SGM (SDXL): the denoiser's scaling class says eps or v
        out["prediction_type"] = "v_prediction" if "VScaling" in scaling else "epsilon"
    if "scale_factor" in params:
        out["latent_scale"] = float(params["scale_factor"])
    return out


def apply_original_config(model: ModelHandle, path: Path) -> ModelHandle:
    config = read_original_config(path)
    scheduler = dict(model.scheduler_config)
    if "prediction_type" in config:
        scheduler["prediction_type"] = config["prediction_type"]
    return replace(model, scheduler_config=scheduler, latent_scale=config.get("latent_scale", model.latent_scale))
