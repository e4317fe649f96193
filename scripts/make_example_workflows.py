"""Write the example workflows in `workflows/`: each in the API format (`NAME.json`) and laid out in the UI
format (`NAME.ui.json`, opens in ComfyUI's editor and ours), plus the example input image.

    python scripts/make_example_workflows.py

The API dicts below are the source of truth; the UI files are derived with `nodegraph.engine.uiformat.api_to_ui`
and then laid out by hand (LAYOUTS): compact enough that the whole graph, fitted in the editor at 1280x720 with
its side panel open, is drawn at a zoom where titles and widget values are readable.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from nodegraph.engine import default_registry
from nodegraph.engine.uiformat import api_to_ui

ROOT = Path(__file__).resolve().parents[1] / "workflows"
SD1 = "nodegraph-demo-sd1.safetensors"


def node(class_type: str, title: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


def sampler(seed: int, model, positive, negative, latent, steps=20, cfg=7.0, denoise=1.0, title="KSampler") -> dict:
    return node(
        "KSampler", title, seed=seed, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal",
        denoise=denoise, model=model, positive=positive, negative=negative, latent_image=latent,
    )


def txt2img() -> dict:
    return {
        "4": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name=SD1),
        "6": node("CLIPTextEncode", "Positive Prompt", text="a red circle", clip=["4", 1]),
        "7": node("CLIPTextEncode", "Negative Prompt", text="", clip=["4", 1]),
        "5": node("EmptyLatentImage", "Empty Latent Image", width=64, height=64, batch_size=1),
        "3": sampler(1, ["4", 0], ["6", 0], ["7", 0], ["5", 0]),
        "8": node("VAEDecode", "VAE Decode", samples=["3", 0], vae=["4", 2]),
        "9": node("SaveImage", "Save Image", filename_prefix="txt2img", images=["8", 0]),
    }


def img2img() -> dict:
    prompt = txt2img()
    del prompt["5"]
    prompt["6"]["inputs"]["text"] = "a blue circle"
    prompt["10"] = node("LoadImage", "Load Image", image="example.png")
    prompt["11"] = node("VAEEncode", "VAE Encode", pixels=["10", 0], vae=["4", 2])
    prompt["3"] = sampler(2, ["4", 0], ["6", 0], ["7", 0], ["11", 0], denoise=0.6)
    prompt["9"]["inputs"]["filename_prefix"] = "img2img"
    return prompt


def hires_fix() -> dict:
    prompt = txt2img()
    prompt["10"] = node(
        "LatentUpscale", "Upscale Latent", samples=["3", 0], upscale_method="bislerp", width=128, height=128,
        crop="disabled",
    )
    prompt["11"] = sampler(3, ["4", 0], ["6", 0], ["7", 0], ["10", 0], steps=12, denoise=0.5, title="Hires Pass")
    prompt["8"]["inputs"]["samples"] = ["11", 0]
    prompt["9"]["inputs"]["filename_prefix"] = "hires_fix"
    return prompt


EXAMPLES = {"txt2img": txt2img, "img2img": img2img, "hires_fix": hires_fix}

# Each example as rows of columns of node ids, read left to right, top to bottom.
LAYOUTS = {
    "txt2img": [[["4", "5"], ["6", "7"], ["3"], ["8", "9"]]],
    "img2img": [[["4", "10"], ["6", "7", "11"], ["3"], ["8", "9"]]],
    "hires_fix": [[["4", "5"], ["6", "7"], ["3", "10"], ["11", "8", "9"]]],
}
GAP = 40.0
TITLE = 30.0  # the title bar sits above a node's `pos`; `size` is its body
TEXT_WIDTH, WIDTH = 340.0, 300.0
IMAGE_ROOM = 200.0  # image nodes are made tall enough to show the picture without growing when it arrives
IMAGE_NODES = {"SaveImage", "PreviewImage", "LoadImage"}


def body_size(entry: dict, info: dict) -> list[float]:
    """The size the editors give a new node of this kind: 20 px per socket row, 26 per widget (68 for a text box)."""
    multiline = [name for name, spec in info["input"].get("required", {}).items()
                 if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("multiline")]
    sockets = sum(1 for slot in entry["inputs"] if "widget" not in slot)
    rows = max(sockets, len(entry["outputs"]))
    widgets = len(entry["widgets_values"])
    height = 20 * rows + 26 * (widgets - len(multiline)) + 108 * len(multiline) + (14 if widgets else 6)
    if entry["type"] in IMAGE_NODES:
        height += IMAGE_ROOM
    return [TEXT_WIDTH if multiline else WIDTH, float(height)]


def lay_out(ui: dict, rows: list[list[list[str]]], info) -> dict:
    """Place and size `ui`'s nodes as `rows` says; the view is left to the editor (it fits the graph)."""
    by_id = {str(entry["id"]): entry for entry in ui["nodes"]}
    top = 0.0
    for row in rows:
        x, bottom = 0.0, top
        for column in row:
            y, width = top, 0.0
            for nid in column:
                entry = by_id[nid]
                entry["size"] = body_size(entry, info(entry["type"]))
                entry["pos"] = [x, y + TITLE]
                y += TITLE + entry["size"][1] + GAP
                width = max(width, entry["size"][0])
            x += width + GAP
            bottom = max(bottom, y)
        top = bottom
    ui["extra"].pop("ds", None)
    return ui


def example_image(path: Path) -> None:
    """A red circle on grey, like the demo model's training images."""
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    image.save(path)


def main() -> None:
    registry = default_registry()
    info = lambda name: registry.object_info(None, name).get(name)  # noqa: E731
    for name, build in EXAMPLES.items():
        prompt = build()
        (ROOT / f"{name}.json").write_text(json.dumps(prompt, indent=2) + "\n")
        ui = lay_out(api_to_ui(prompt, info), LAYOUTS[name], info)
        (ROOT / f"{name}.ui.json").write_text(json.dumps(ui, indent=2) + "\n")
    example_image(ROOT / "inputs" / "example.png")


if __name__ == "__main__":
    main()
