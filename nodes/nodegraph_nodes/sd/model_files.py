"""Component loaders, savers and merges: ComfyUI's UNETLoader, CLIPLoader, DualCLIPLoader, CheckpointLoader (with
config), CheckpointSave, CLIPSave, VAESave, ModelSave and its ModelMerge* / CLIPMerge* nodes.

Names, inputs, defaults and the `type` choices are ComfyUI's (v0.3.75). Of the CLIP types, the ones for the
families nodegraph runs work (stable_diffusion: a CLIP-L, OpenCLIP-H or OpenCLIP-bigG file; sdxl: CLIP-L + bigG);
the others are accepted by validation, as ComfyUI lists them, and fail in the node with what is supported.
"""
from __future__ import annotations

import json
from typing import Any

from nodegraph.engine import Combo, Float, Folders, Input, Node, NodeResult, Output, Runtime, String

from .loader_nodes import _file_fingerprint, _models, _with_embeddings

# ComfyUI v0.3.75's choices (nodes.py), in its order.
CLIP_TYPES = [
    "stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos", "lumina2",
    "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2",
]
DUAL_CLIP_TYPES = ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15"]
UNET_WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
CLIP_DEVICES = ["default", "cpu"]


def _configs(env: Folders | None) -> list[str]:
    return env.list_models("configs") if env is not None else []


def _metadata(context: Any, **extra: str) -> dict[str, str]:
    """ComfyUI's safetensors metadata for saved models: the prompt and each extra_pnginfo entry as JSON."""
    if context.runtime.settings.get("disable_metadata"):
        return {}
    out = dict(extra)
    out["prompt"] = json.dumps(context.prompt) if context.prompt else ""
    for key, value in (context.extra_pnginfo or {}).items():
        out[key] = json.dumps(value)
    return out


def _check_prefix(env: Folders | None, filename_prefix: str) -> dict[str, str] | None:
    from ..core.files import output_prefix_problem

    return output_prefix_problem(env, filename_prefix)


def _next_path(context: Any, filename_prefix: str):
    from ..core.outputs import next_path

    return next_path(context.env.output_dir, filename_prefix, "safetensors")[0]


# --- loaders -----------------------------------------------------------------------------------------------------


class UNETLoader(Node):
    """Load a diffusion model (UNet) alone, from models/diffusion_models (or models/unet): the UNet of SD1.x,
    SD2.x or SDXL in the original layout, with or without the `model.diffusion_model.` prefix."""

    display_name = "Load Diffusion Model"
    category = "advanced/loaders"
    unet_name = Combo(_models("diffusion_models"))
    weight_dtype = Combo(UNET_WEIGHT_DTYPES)
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, unet_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "diffusion_models", unet_name)

    def execute(self, unet_name: str, weight_dtype: str) -> tuple[Any]:
        from ..diffusion import component_ops

        env = self.context.env
        path = env.model_path("diffusion_models", unet_name)
        return (component_ops.load_unet(self.context.runtime, path, weight_dtype),)


class CLIPLoader(Node):
    """Load a text encoder from models/text_encoders (or models/clip). stable_diffusion: a CLIP-L file gives SD1's
    CLIP, an OpenCLIP-H file SD2's, an OpenCLIP-bigG file the SDXL refiner's."""

    display_name = "Load CLIP"
    category = "advanced/loaders"
    clip_name = Combo(_models("text_encoders"))
    type = Combo(CLIP_TYPES)
    device = Combo(CLIP_DEVICES, optional=True, advanced=True)
    outputs = (Output("CLIP"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, clip_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "text_encoders", clip_name)

    def execute(self, clip_name: str, type: str, device: str = "default") -> tuple[Any]:
        from ..diffusion import component_ops

        env = self.context.env
        clip = component_ops.load_clip(self.context.runtime, [env.model_path("text_encoders", clip_name)], type)
        return (_with_embeddings(clip, env),)


class DualCLIPLoader(Node):
    """Load two text encoders as one CLIP. sdxl: a CLIP-L file and an OpenCLIP-bigG file, in either order."""

    category = "advanced/loaders"
    clip_name1 = Combo(_models("text_encoders"))
    clip_name2 = Combo(_models("text_encoders"))
    type = Combo(DUAL_CLIP_TYPES)
    device = Combo(CLIP_DEVICES, optional=True, advanced=True)
    outputs = (Output("CLIP"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, clip_name1: str = "", clip_name2: str = "", **_: Any) -> Any:
        return tuple(_file_fingerprint(env, "text_encoders", name) for name in (clip_name1, clip_name2))

    def execute(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple[Any]:
        from ..diffusion import component_ops

        env = self.context.env
        paths = [env.model_path("text_encoders", clip_name1), env.model_path("text_encoders", clip_name2)]
        return (_with_embeddings(component_ops.load_clip(self.context.runtime, paths, type), env),)


class CheckpointLoader(Node):
    """Load a checkpoint with an original inference config (.yaml in models/configs): the config decides what the
    weights cannot tell, the prediction type (`parameterization: v`) and the latent scale factor."""

    display_name = "Load Checkpoint With Config (DEPRECATED)"
    category = "advanced/loaders"
    deprecated = True
    config_name = Combo(_configs)
    ckpt_name = Combo(_models("checkpoints"))
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    @classmethod
    def fingerprint(cls, env: Folders | None, config_name: str = "", ckpt_name: str = "", **_: Any) -> Any:
        return (_file_fingerprint(env, "configs", config_name), _file_fingerprint(env, "checkpoints", ckpt_name))

    def execute(self, config_name: str, ckpt_name: str) -> tuple[Any, Any, Any]:
        from ..diffusion import component_ops, ops

        env = self.context.env
        model, clip, vae = ops.load_checkpoint(self.context.runtime, env.model_path("checkpoints", ckpt_name))
        model = component_ops.apply_original_config(model, env.model_path("configs", config_name))
        return model, _with_embeddings(clip, env), vae


# --- savers ------------------------------------------------------------------------------------------------------


class _Save(Node):
    category = "advanced/model_merging"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    default_prefix = ""

    @classmethod
    def check_inputs(cls, env: Folders | None, filename_prefix: str = "", **_: Any) -> dict[str, str] | None:
        return _check_prefix(env, filename_prefix or cls.default_prefix)

    @classmethod
    def fingerprint(cls, env: Folders | None, **_: Any) -> float:
        return float("nan")  # writing the file is the point: every run writes one, as in ComfyUI


class CheckpointSave(_Save):
    """Save MODEL, CLIP and VAE as one checkpoint (original layout, .safetensors) in the output folder; Load
    Checkpoint reads it back."""

    display_name = "Save Checkpoint"
    model = Input("MODEL")
    clip = Input("CLIP")
    vae = Input("VAE")
    filename_prefix = String("checkpoints/ComfyUI")
    default_prefix = "checkpoints/ComfyUI"

    def execute(self, model: Any, clip: Any, vae: Any, filename_prefix: str) -> NodeResult:
        from ..diffusion import component_ops

        path = _next_path(self.context, filename_prefix)
        component_ops.save_checkpoint(self.context.runtime, model, clip, vae, path, _metadata(self.context))
        return NodeResult()


class CLIPSave(_Save):
    """Save each text encoder of a CLIP as its own file, `<prefix>_clip_l` / `_clip_h` / `_clip_g` (Load CLIP and
    DualCLIPLoader read them back)."""

    clip = Input("CLIP")
    filename_prefix = String("clip/ComfyUI")
    default_prefix = "clip/ComfyUI"

    def execute(self, clip: Any, filename_prefix: str) -> NodeResult:
        from ..diffusion import component_ops

        component_ops.save_clip(self.context.runtime, clip, lambda prefix: _next_path(self.context, prefix),
                                filename_prefix, _metadata(self.context, format="pt"))
        return NodeResult()


class VAESave(_Save):
    """Save a VAE as a standalone original-layout file (Load VAE reads it back)."""

    vae = Input("VAE")
    filename_prefix = String("vae/ComfyUI_vae")
    default_prefix = "vae/ComfyUI_vae"

    def execute(self, vae: Any, filename_prefix: str) -> NodeResult:
        from ..diffusion import component_ops

        component_ops.save_vae(self.context.runtime, vae, _next_path(self.context, filename_prefix),
                               _metadata(self.context))
        return NodeResult()


class ModelSave(_Save):
    """Save a MODEL's UNet alone (`model.diffusion_model.*` keys; Load Diffusion Model reads it back)."""

    model = Input("MODEL")
    filename_prefix = String("diffusion_models/ComfyUI")
    default_prefix = "diffusion_models/ComfyUI"

    def execute(self, model: Any, filename_prefix: str) -> NodeResult:
        from ..diffusion import component_ops

        component_ops.save_unet(self.context.runtime, model, _next_path(self.context, filename_prefix),
                                _metadata(self.context))
        return NodeResult()


# --- merges: out = a * model1 + b * model2 on every weight both have (ComfyUI's patch arithmetic) ----------------


def _merge_models(runtime: Runtime, node: str, model1: Any, model2: Any, a: float, b: float) -> tuple[Any]:
    from ..diffusion import component_ops

    return (component_ops.merge_models(runtime, model1, model2, a, b, node),)


def _merge_clips(runtime: Runtime, node: str, clip1: Any, clip2: Any, a: float, b: float) -> tuple[Any]:
    from ..diffusion import component_ops

    return (component_ops.merge_clips(runtime, clip1, clip2, a, b, node),)


class ModelMergeSimple(Node):
    """ratio * model1 + (1 - ratio) * model2, weight by weight (ratio 1 is model1 unchanged)."""

    category = "advanced/model_merging"
    model1 = Input("MODEL")
    model2 = Input("MODEL")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MODEL"),)

    def execute(self, model1: Any, model2: Any, ratio: float) -> tuple[Any]:
        return _merge_models(self.context.runtime, "ModelMergeSimple", model1, model2, ratio, 1.0 - ratio)


class ModelMergeSubtract(Node):
    """multiplier * (model1 - model2), weight by weight (ComfyUI scales model1 by the multiplier too)."""

    category = "advanced/model_merging"
    model1 = Input("MODEL")
    model2 = Input("MODEL")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01)
    outputs = (Output("MODEL"),)

    def execute(self, model1: Any, model2: Any, multiplier: float) -> tuple[Any]:
        return _merge_models(self.context.runtime, "ModelMergeSubtract", model1, model2, multiplier, -multiplier)


class ModelMergeAdd(Node):
    """model1 + model2, weight by weight."""

    category = "advanced/model_merging"
    model1 = Input("MODEL")
    model2 = Input("MODEL")
    outputs = (Output("MODEL"),)

    def execute(self, model1: Any, model2: Any) -> tuple[Any]:
        return _merge_models(self.context.runtime, "ModelMergeAdd", model1, model2, 1.0, 1.0)


class ModelMergeBlocks(Node):
    """Like ModelMergeSimple with a ratio per part of the UNet: `input` for the input blocks (and the time and size
    embeddings), `middle` for the middle block, `out` for the output blocks and the final layers."""

    category = "advanced/model_merging"
    model1 = Input("MODEL")
    model2 = Input("MODEL")
    input = Float(1.0, min=0.0, max=1.0, step=0.01)
    middle = Float(1.0, min=0.0, max=1.0, step=0.01)
    out = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MODEL"),)

    def execute(self, model1: Any, model2: Any, input: float, middle: float, out: float) -> tuple[Any]:
        from ..diffusion import component_ops

        ratios = {"input": input, "middle": middle, "out": out}
        return (component_ops.merge_model_blocks(self.context.runtime, model1, model2, ratios),)


class CLIPMergeSimple(Node):
    """ratio * clip1 + (1 - ratio) * clip2 for every text-encoder weight (position ids and logit scale kept)."""

    category = "advanced/model_merging"
    clip1 = Input("CLIP")
    clip2 = Input("CLIP")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("CLIP"),)

    def execute(self, clip1: Any, clip2: Any, ratio: float) -> tuple[Any]:
        return _merge_clips(self.context.runtime, "CLIPMergeSimple", clip1, clip2, ratio, 1.0 - ratio)


class CLIPMergeSubtract(Node):
    """multiplier * (clip1 - clip2) for every text-encoder weight."""

    category = "advanced/model_merging"
    clip1 = Input("CLIP")
    clip2 = Input("CLIP")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01)
    outputs = (Output("CLIP"),)

    def execute(self, clip1: Any, clip2: Any, multiplier: float) -> tuple[Any]:
        return _merge_clips(self.context.runtime, "CLIPMergeSubtract", clip1, clip2, multiplier, -multiplier)


class CLIPMergeAdd(Node):
    """clip1 + clip2 for every text-encoder weight."""

    category = "advanced/model_merging"
    clip1 = Input("CLIP")
    clip2 = Input("CLIP")
    outputs = (Output("CLIP"),)

    def execute(self, clip1: Any, clip2: Any) -> tuple[Any]:
        return _merge_clips(self.context.runtime, "CLIPMergeAdd", clip1, clip2, 1.0, 1.0)


NODES = [
    UNETLoader, CLIPLoader, DualCLIPLoader, CheckpointLoader, CheckpointSave, CLIPSave, VAESave, ModelSave,
    ModelMergeSimple, ModelMergeSubtract, ModelMergeAdd, ModelMergeBlocks,
    CLIPMergeSimple, CLIPMergeSubtract, CLIPMergeAdd,
]
