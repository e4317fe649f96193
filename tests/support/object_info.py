"""Hand-written ``object_info`` records (docs/compat.md §3.4) and UI workflows shared by the UI-format tests (the
frontend's default txt2img graph is `workflows.FRONTEND_TXT2IMG`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

UI_DATA = Path(__file__).resolve().parents[1] / "data" / "ui"

MAX_RESOLUTION = 16384
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "ddim", "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"]
CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly-fp16.safetensors"]
INPUT_IMAGES = ["example.png", "in.png"]


def _record(name: str, display_name: str, category: str, required: dict[str, list], outputs: list[str],
            output_names: list[str] | None = None, optional: dict[str, list] | None = None,
            hidden: dict[str, str] | None = None, output_node: bool = False) -> dict[str, Any]:
    """An object_info record shaped like ComfyUI's ``node_info()``."""
    inputs: dict[str, Any] = {"required": required}
    order: dict[str, list[str]] = {"required": list(required)}
    if optional:
        inputs["optional"] = optional
        order["optional"] = list(optional)
    if hidden:
        inputs["hidden"] = hidden
    return {
        "input": inputs,
        "input_order": order,
        "is_input_list": False,
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": output_names or outputs,
        "name": name,
        "display_name": display_name,
        "description": "",
        "python_module": "nodes",
        "category": category,
        "output_node": output_node,
    }


NODE_INFO: dict[str, dict[str, Any]] = {
    "CheckpointLoaderSimple": _record(
        "CheckpointLoaderSimple", "Load Checkpoint", "loaders",
        {"ckpt_name": [CHECKPOINTS, {"tooltip": "The name of the checkpoint (model) to load."}]},
        ["MODEL", "CLIP", "VAE"]),
    "CLIPTextEncode": _record(
        "CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning",
        {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]},
        ["CONDITIONING"]),
    "EmptyLatentImage": _record(
        "EmptyLatentImage", "Empty Latent Image", "latent",
        {"width": ["INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}],
         "height": ["INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}],
         "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]},
        ["LATENT"]),
    "KSampler": _record(
        "KSampler", "KSampler", "sampling",
        {"model": ["MODEL"],
         "seed": ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}],
         "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
         "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
         "sampler_name": [SAMPLERS],
         "scheduler": [SCHEDULERS],
         "positive": ["CONDITIONING"],
         "negative": ["CONDITIONING"],
         "latent_image": ["LATENT"],
         "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]},
        ["LATENT"]),
    "VAEDecode": _record(
        "VAEDecode", "VAE Decode", "latent", {"samples": ["LATENT"], "vae": ["VAE"]}, ["IMAGE"]),
    "VAEEncode": _record(
        "VAEEncode", "VAE Encode", "latent", {"pixels": ["IMAGE"], "vae": ["VAE"]}, ["LATENT"]),
    "SaveImage": _record(
        "SaveImage", "Save Image", "image",
        {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
        [], hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}, output_node=True),
    "LoadImage": _record(
        "LoadImage", "Load Image", "image",
        {"image": [INPUT_IMAGES, {"image_upload": True}]}, ["IMAGE", "MASK"]),
    "LatentUpscale": _record(
        "LatentUpscale", "Upscale Latent", "latent",
        {"samples": ["LATENT"],
         "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]],
         "width": ["INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8}],
         "height": ["INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8}],
         "crop": [["disabled", "center"]]},
        ["LATENT"]),
    # A real (server-side) primitive, unlike the editor-only PrimitiveNode.
    "PrimitiveInt": _record(
        "PrimitiveInt", "Int", "utils/primitive",
        {"value": ["INT", {"min": -(2**63) + 1, "max": 2**63 - 1, "control_after_generate": True}]},
        ["INT"]),
}


def node_info(class_type: str) -> dict[str, Any] | None:
    """The fixture table as the ``node_info`` callable the converter takes."""
    return NODE_INFO.get(class_type)


def load_ui(name: str) -> dict[str, Any]:
    """One of the hand-written UI workflows under tests/data/ui."""
    return json.loads((UI_DATA / name).read_text(encoding="utf-8"))
