"""API-format prompts the tests submit: utility math, the test pack's image, sleeps, txt2img, hostile graphs, and
the editor's saved (UI-format) math graph."""
from __future__ import annotations

from typing import Any

def math_workflow(a: int = 2, b: int = 3) -> dict[str, Any]:
    """Int(a) + Int(b) -> ShowText."""
    return {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": a}},
        "2": {"class_type": "PrimitiveInt", "inputs": {"value": b}},
        "3": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "op": "add", "b": ["2", 0]}},
        "4": {"class_type": "ShowText", "inputs": {"value": ["3", 0]}},
    }


def image_workflow(steps: int = 3, shade: int = 128, prefix: str = "test") -> dict[str, Any]:
    """TestPattern (progress + previews) -> SaveTestImage (a PNG in output/)."""
    return {
        "1": {"class_type": "TestPattern", "inputs": {"width": 640, "height": 480, "steps": steps, "shade": shade}},
        "2": {"class_type": "SaveTestImage", "inputs": {"image": ["1", 0], "filename_prefix": prefix}},
    }


def sleep_workflow(seconds: float, value: str = "x") -> dict[str, Any]:
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": value}},
        "2": {"class_type": "Sleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "ShowText", "inputs": {"value": ["2", 0]}},
    }


# --- txt2img: one builder, the tiny-model run and the ComfyUI frontend's default graph --------------------------

_TITLES = {"4": "Load Checkpoint", "6": "CLIP Text Encode (Prompt)", "7": "CLIP Text Encode (Prompt)",
           "5": "Empty Latent Image", "3": "KSampler", "8": "VAE Decode", "9": "Save Image"}

# The frontend's default graph, as graphToPrompt sends it (docs/compat.md §3.1).
FRONTEND_DEFAULTS: dict[str, Any] = dict(
    checkpoint="v1-5-pruned-emaonly-fp16.safetensors",
    positive="beautiful scenery nature glass bottle landscape, purple galaxy bottle", negative="text, watermark",
    size=512, seed=156680208700286, steps=20, cfg=8.0, prefix="ComfyUI", titles=True,
)


def txt2img(checkpoint: str = "tiny_sd1.safetensors", positive: str = "a red circle", negative: str = "blurry",
            size: int = 64, seed: int = 42, steps: int = 4, cfg: float = 7.0, prefix: str = "test",
            titles: bool = False, **changes: Any) -> dict[str, Any]:
    """Checkpoint -> two CLIPTextEncode -> KSampler (euler, normal) -> VAEDecode -> SaveImage, a fresh dict.

    The defaults are the tiny-model run (make_tiny_models' tiny_sd1, 64x64, 4 steps); `titles` adds the `_meta`
    titles the frontend sends. `changes` are `node.input=value`, e.g. txt2img(**{"3.seed": 1}).
    """
    prompt: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }
    if titles:
        for nid, title in _TITLES.items():
            prompt[nid]["_meta"] = {"title": title}
    for key, value in changes.items():
        nid, name = key.split(".")
        prompt[nid]["inputs"][name] = value
    return prompt


def txt2img_from(model: list, clip: list, vae: list, loaders: dict[str, Any], seed: int = 42,
                 size: int = 64) -> dict[str, Any]:
    """Loader nodes (ids from "1") feeding a txt2img graph ("20"...): `model` / `clip` / `vae` are links into them
    (a checkpoint, split files, a LoRA, a merge...)."""
    return {
        **loaders,
        "20": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": clip}},
        "21": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "22": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "23": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 4, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": model, "positive": ["20", 0], "negative": ["21", 0], "latent_image": ["22", 0]}},
        "24": {"class_type": "VAEDecode", "inputs": {"samples": ["23", 0], "vae": vae}},
        "25": {"class_type": "PreviewImage", "inputs": {"images": ["24", 0]}},
    }


def frontend_txt2img(**changes: Any) -> dict[str, Any]:
    """A fresh copy of the frontend's default graph (FRONTEND_TXT2IMG), to edit into a test's expectation."""
    return txt2img(**FRONTEND_DEFAULTS, **changes)


TXT2IMG = txt2img()
FRONTEND_TXT2IMG = frontend_txt2img()


# --- hostile graphs (hardening tests) -----------------------------------------------------------------------------


def power_tower(stages: int) -> dict[str, Any]:
    """The 405-byte freeze: Int Math power on 2**63-1, chained."""
    prompt: dict[str, Any] = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 2**63 - 1}}}
    for i in range(stages):
        prompt[str(i + 2)] = {"class_type": "IntMath", "inputs": {"a": [str(i + 1), 0], "op": "power", "b": 1024}}
    prompt["99"] = {"class_type": "ShowText", "inputs": {"value": [str(stages + 1), 0]}}
    return prompt


def chain(n: int) -> dict[str, Any]:
    """An n-node utility chain: Int -> Int Math add ... -> Show Text."""
    prompt: dict[str, Any] = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "op": "add", "b": 1}}
    prompt[str(n - 1)] = {"class_type": "ShowText", "inputs": {"value": [str(n - 2), 0]}}
    return prompt


def cycle(n: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {str(i): {"class_type": "ToString", "inputs": {"value": [str((i - 1) % n), 0]}}
                              for i in range(n)}
    prompt["out"] = {"class_type": "ShowText", "inputs": {"value": ["0", 0]}}
    return prompt


def string_doubling(steps: int) -> dict[str, Any]:
    """Each Concatenate joins the previous string with itself: 2**steps times the first one."""
    prompt: dict[str, Any] = {"0": {"class_type": "PrimitiveString", "inputs": {"value": "x" * 64}}}
    for i in range(1, steps + 1):
        prompt[str(i)] = {"class_type": "StringConcat",
                          "inputs": {"first": [str(i - 1), 0], "second": [str(i - 1), 0], "separator": ""}}
    prompt["out"] = {"class_type": "ShowText", "inputs": {"value": [str(steps), 0]}}
    return prompt


# --- the editor's saved graphs ------------------------------------------------------------------------------------


def math_ui_workflow() -> dict[str, Any]:
    """Int(2) + Int(3) -> Show Text, as the editor saves it (schema 0.4)."""
    return {
        "last_node_id": 4, "last_link_id": 3,
        "nodes": [
            {"id": 1, "type": "PrimitiveInt", "pos": [40, 80], "size": [240, 82], "flags": {}, "order": 0,
             "mode": 0, "outputs": [{"name": "INT", "type": "INT", "links": [1], "slot_index": 0}],
             "properties": {}, "widgets_values": [2, "fixed"]},
            {"id": 2, "type": "PrimitiveInt", "pos": [40, 240], "size": [240, 82], "flags": {}, "order": 1,
             "mode": 0, "outputs": [{"name": "INT", "type": "INT", "links": [2], "slot_index": 0}],
             "properties": {}, "widgets_values": [3, "fixed"]},
            {"id": 3, "type": "IntMath", "pos": [340, 120], "size": [240, 110], "flags": {}, "order": 2, "mode": 0,
             "inputs": [{"name": "a", "type": "INT", "link": 1, "widget": {"name": "a"}},
                        {"name": "op", "type": "COMBO", "link": None, "widget": {"name": "op"}},
                        {"name": "b", "type": "INT", "link": 2, "widget": {"name": "b"}}],
             "outputs": [{"name": "result", "type": "INT", "links": [3], "slot_index": 0}],
             "properties": {}, "widgets_values": [0, "add", 0]},
            {"id": 4, "type": "ShowText", "pos": [640, 140], "size": [240, 120], "flags": {}, "order": 3, "mode": 0,
             "inputs": [{"name": "value", "type": "*", "link": 3}], "properties": {}, "widgets_values": []},
        ],
        "links": [[1, 1, 0, 3, 0, "INT"], [2, 2, 0, 3, 2, "INT"], [3, 3, 0, 4, 0, "INT"]],
        "groups": [{"id": 1, "title": "Numbers", "bounding": [20, 20, 280, 330], "color": "#3f789e",
                    "font_size": 24, "flags": {}}],
        "config": {}, "extra": {}, "version": 0.4,
    }


def pattern_api_prompt(steps: int = 3, shade: int = 90) -> dict[str, Any]:
    """TestPattern (progress + previews) -> SaveTestImage, in API format."""
    return {
        "1": {"class_type": "TestPattern", "inputs": {"width": 320, "height": 240, "steps": steps, "shade": shade},
              "_meta": {"title": "Test pattern"}},
        "2": {"class_type": "SaveTestImage", "inputs": {"image": ["1", 0], "filename_prefix": "editor"},
              "_meta": {"title": "Save"}},
    }
