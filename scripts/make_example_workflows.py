"""Write the example workflows in `workflows/`: each in the API format (`NAME.json`) and laid out in the UI
format (`NAME.ui.json`, opens in ComfyUI's editor and ours), plus the example input image.

    python scripts/make_example_workflows.py

The API dicts below are the source of truth; the UI files are derived with `nodegraph.engine.uiformat.api_to_ui`.
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
        (ROOT / f"{name}.ui.json").write_text(json.dumps(api_to_ui(prompt, info), indent=2) + "\n")
    example_image(ROOT / "inputs" / "example.png")


if __name__ == "__main__":
    main()
