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
SDXL_BASE = "nodegraph-demo-sdxl-base.safetensors"
SDXL_REFINER = "nodegraph-demo-sdxl-refiner.safetensors"
CANNY = "nodegraph-demo-canny.safetensors"
GIANT_LORA = "nodegraph-demo-giant.safetensors"
UPSCALER = "nodegraph-demo-esrgan-4x.safetensors"
INPAINT_BOX = (8, 8, 56, 56)  # the example mask: latent cells 1..6 around the circle (left, top, right, bottom)


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
    """Repaint the example image (a red circle) blue. Denoise 0.7: at 0.6 the demo model keeps the red in 5 of 16
    seeds; at 0.7 all 16 turn blue, and the circle stays where it was."""
    prompt = txt2img()
    del prompt["5"]
    prompt["6"]["inputs"]["text"] = "a blue circle"
    prompt["10"] = node("LoadImage", "Load Image", image="example.png")
    prompt["11"] = node("VAEEncode", "VAE Encode", pixels=["10", 0], vae=["4", 2])
    prompt["3"] = sampler(2, ["4", 0], ["6", 0], ["7", 0], ["11", 0], denoise=0.7)
    prompt["9"]["inputs"]["filename_prefix"] = "img2img"
    return prompt


def hires_fix() -> dict:
    """txt2img, upscaled 1.5x in latent space, then a second pass at denoise 0.5. Sized for the demo model, which
    was trained on 64 px pictures only: at 2x (128 px) its second pass draws a second object beside the first (2 of
    3 seeds, also at denoise 0.3); at 96 px all three seeds tried kept one object matching the prompt. With real
    SD1 checkpoints, start from 512 px and upscale to 768 or 1024."""
    prompt = txt2img()
    prompt["10"] = node(
        "LatentUpscale", "Upscale Latent", samples=["3", 0], upscale_method="bislerp", width=96, height=96,
        crop="disabled",
    )
    prompt["11"] = sampler(3, ["4", 0], ["6", 0], ["7", 0], ["10", 0], steps=12, denoise=0.5, title="Hires Pass")
    prompt["8"]["inputs"]["samples"] = ["11", 0]
    prompt["9"]["inputs"]["filename_prefix"] = "hires_fix"
    return prompt


def lora() -> dict:
    """txt2img through the demo "giant" LoRA (a style the demo model cannot draw: shapes 42-50 px wide instead of
    22-30); strength_model 0 gives the plain txt2img picture. It adapts only the UNet, so strength_clip does
    nothing here."""
    prompt = txt2img()
    prompt["10"] = node("LoraLoader", "Load LoRA", model=["4", 0], clip=["4", 1], lora_name=GIANT_LORA,
                        strength_model=1.0, strength_clip=1.0)
    prompt["6"]["inputs"]["text"] = "a blue square"
    prompt["6"]["inputs"]["clip"] = ["10", 1]
    prompt["7"]["inputs"]["clip"] = ["10", 1]
    prompt["3"] = sampler(4, ["10", 0], ["6", 0], ["7", 0], ["5", 0])
    prompt["9"]["inputs"]["filename_prefix"] = "lora"
    return prompt


def _sdxl_stages(refiner_stage: dict) -> dict:
    """SDXL base to step 20 of 25 with leftover noise, then `refiner_stage` ("11") on the same schedule.

    64 x 64 pixels: the size the shipped demo models draw; with real SDXL checkpoints set every 64 to 1024.
    """
    size = {"width": 64, "height": 64}
    sdxl_text = lambda title, text: node(  # noqa: E731
        "CLIPTextEncodeSDXL", title, clip=["4", 1], **size, crop_w=0, crop_h=0, target_width=64,
        target_height=64, text_g=text, text_l=text,
    )
    return {
        "4": node("CheckpointLoaderSimple", "Load SDXL Base", ckpt_name=SDXL_BASE),
        "12": node("CheckpointLoaderSimple", "Load SDXL Refiner", ckpt_name=SDXL_REFINER),
        "6": sdxl_text("Positive Prompt (Base)", "a red circle"),
        "7": sdxl_text("Negative Prompt (Base)", ""),
        "15": node("CLIPTextEncodeSDXLRefiner", "Positive Prompt (Refiner)", ascore=6.0, **size,
                   text="a red circle", clip=["12", 1]),
        "16": node("CLIPTextEncodeSDXLRefiner", "Negative Prompt (Refiner)", ascore=2.5, **size,
                   text="", clip=["12", 1]),
        "5": node("EmptyLatentImage", "Empty Latent Image", **size, batch_size=1),
        "10": node(
            "KSamplerAdvanced", "Base (steps 0-20)", add_noise="enable", noise_seed=4, steps=25, cfg=7.5,
            sampler_name="euler", scheduler="normal", model=["4", 0], positive=["6", 0], negative=["7", 0],
            latent_image=["5", 0], start_at_step=0, end_at_step=20, return_with_leftover_noise="enable",
        ),
        "11": refiner_stage,
        "8": node("VAEDecode", "VAE Decode", samples=["11", 0], vae=["4", 2]),
    }


def sdxl_refiner() -> dict:
    """SDXL base + refiner with the SDXLRefiner node taking over at step 20."""
    prompt = _sdxl_stages(node(
        "SDXLRefiner", "SDXL Refiner (steps 20-25)", model=["12", 0], noise_seed=4, steps=25, cfg=7.5,
        sampler_name="euler", scheduler="normal", positive=["15", 0], negative=["16", 0], latent_image=["10", 0],
        switch_at=20.0, switch_unit="step",
    ))
    prompt["9"] = node("SaveImage", "Save Image", filename_prefix="sdxl_refiner", images=["8", 0])
    return prompt


def sdxl_refiner_advanced() -> dict:
    """The same split as ComfyUI's standard template: two KSamplerAdvanced nodes sharing one schedule."""
    prompt = _sdxl_stages(node(
        "KSamplerAdvanced", "Refiner (steps 20-25)", add_noise="disable", noise_seed=4, steps=25, cfg=7.5,
        sampler_name="euler", scheduler="normal", model=["12", 0], positive=["15", 0], negative=["16", 0],
        latent_image=["10", 0], start_at_step=20, end_at_step=10000, return_with_leftover_noise="disable",
    ))
    prompt["9"] = node("SaveImage", "Save Image", filename_prefix="sdxl_refiner_advanced", images=["8", 0])
    return prompt


def _apply_controlnet(title: str, positive, negative, control_net, image, strength=1.0, start=0.0, end=1.0):
    return node(
        "ControlNetApplyAdvanced", title, positive=positive, negative=negative, control_net=control_net,
        image=image, strength=strength, start_percent=start, end_percent=end,
    )


def controlnet_canny() -> dict:
    """The outline of the input image (Canny edges) steers a txt2img run. The example image is low in contrast
    (red on grey), and Canny works on the grey image, where a red or green shape can have almost the luminance of
    its background: hence thresholds far below the 0.4 / 0.8 defaults (at 0.15 / 0.3 a third of the demo data
    set's outlines go missing)."""
    prompt = txt2img()
    prompt["6"]["inputs"]["text"] = "a blue circle"
    prompt["10"] = node("LoadImage", "Load Image", image="example.png")
    prompt["13"] = node("Canny", "Canny", image=["10", 0], low_threshold=0.05, high_threshold=0.1)
    prompt["12"] = node("ControlNetLoader", "Load ControlNet Model", control_net_name=CANNY)
    prompt["14"] = _apply_controlnet("Apply ControlNet", ["6", 0], ["7", 0], ["12", 0], ["13", 0], strength=0.9)
    prompt["3"] = sampler(5, ["4", 0], ["14", 0], ["14", 1], ["5", 0])
    prompt["9"]["inputs"]["filename_prefix"] = "controlnet_canny"
    return prompt


def controlnet_mixed() -> dict:
    """Two ControlNets chained: the canny outline for the whole run, and the image itself as a softer hint for
    the first half only (fixing the layout, leaving the details free). Their residuals add up."""
    prompt = controlnet_canny()
    prompt["15"] = _apply_controlnet(
        "Apply ControlNet (first half)", ["14", 0], ["14", 1], ["12", 0], ["10", 0], strength=0.5, end=0.5
    )
    prompt["3"] = sampler(6, ["4", 0], ["15", 0], ["15", 1], ["5", 0])
    prompt["9"]["inputs"]["filename_prefix"] = "controlnet_mixed"
    return prompt


def inpaint() -> dict:
    """Repaint the circle of the example image blue and keep the rest: the image's latent with a noise mask
    (SetLatentNoiseMask), sampled from full noise inside the mask. The demo SD1 model is no inpainting model; the
    mask makes any model inpaint. (With a 9-channel inpainting checkpoint use InpaintModelConditioning instead.)"""
    prompt = img2img()
    prompt["6"]["inputs"]["text"] = "a blue circle"
    prompt["12"] = node("LoadImageMask", "Load Mask", image="example_mask.png", channel="red")
    prompt["13"] = node("SetLatentNoiseMask", "Set Latent Noise Mask", samples=["11", 0], mask=["12", 0])
    prompt["3"] = sampler(7, ["4", 0], ["6", 0], ["7", 0], ["13", 0], denoise=1.0)
    prompt["9"]["inputs"]["filename_prefix"] = "inpaint"
    return prompt


def upscale() -> dict:
    """txt2img, then the demo 4x ESRGAN upscale model: 64x64 -> 256x256."""
    prompt = txt2img()
    prompt["10"] = node("UpscaleModelLoader", "Load Upscale Model", model_name=UPSCALER)
    prompt["11"] = node("ImageUpscaleWithModel", "Upscale Image (using Model)", upscale_model=["10", 0],
                        image=["8", 0])
    prompt["9"]["inputs"]["images"] = ["11", 0]
    prompt["9"]["inputs"]["filename_prefix"] = "upscale"
    return prompt


AREA_PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow square"]


def area_composition() -> dict:
    """Four prompts in the four 64 px quadrants of a 128 px canvas (ComfyUI's area composition): each area is
    denoised at the demo model's own 64 px size and the areas blend at their seams. The negative prompt is given
    the same four areas, so classifier-free guidance also works at 64 px (the demo model never saw 128 px)."""
    prompt = {
        "4": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name=SD1),
        "7": node("CLIPTextEncode", "Negative Prompt", text="", clip=["4", 1]),
        "5": node("EmptyLatentImage", "Empty Latent Image", width=128, height=128, batch_size=1),
    }
    corners = ["Top Left", "Top Right", "Bottom Left", "Bottom Right"]
    positive = negative = None
    for i, (text, corner) in enumerate(zip(AREA_PROMPTS, corners)):
        x, y = (i % 2) * 64, (i // 2) * 64
        prompt[f"1{i}"] = node("CLIPTextEncode", f"Prompt {corner}", text=text, clip=["4", 1])
        prompt[f"2{i}"] = node("ConditioningSetArea", f"Area {corner}", conditioning=[f"1{i}", 0], width=64,
                               height=64, x=x, y=y, strength=1.0)
        prompt[f"4{i}"] = node("ConditioningSetArea", f"Negative Area {corner}", conditioning=["7", 0], width=64,
                               height=64, x=x, y=y, strength=1.0)
        if i == 0:
            positive, negative = ["20", 0], ["40", 0]
        else:
            prompt[f"3{i}"] = node("ConditioningCombine", "Combine", conditioning_1=positive,
                                   conditioning_2=[f"2{i}", 0])
            prompt[f"5{i}"] = node("ConditioningCombine", "Combine Negative", conditioning_1=negative,
                                   conditioning_2=[f"4{i}", 0])
            positive, negative = [f"3{i}", 0], [f"5{i}", 0]
    prompt["3"] = sampler(1, ["4", 0], positive, negative, ["5", 0])
    prompt["8"] = node("VAEDecode", "VAE Decode", samples=["3", 0], vae=["4", 2])
    prompt["9"] = node("SaveImage", "Save Image", filename_prefix="area_composition", images=["8", 0])
    return prompt


EXAMPLES = {
    "txt2img": txt2img,
    "img2img": img2img,
    "hires_fix": hires_fix,
    "sdxl_refiner": sdxl_refiner,
    "sdxl_refiner_advanced": sdxl_refiner_advanced,
    "controlnet_canny": controlnet_canny,
    "controlnet_mixed": controlnet_mixed,
    "area_composition": area_composition,
    "lora": lora,
    "inpaint": inpaint,
    "upscale": upscale,
}

# One line each, for `nodegraph examples` (written to workflows/examples.txt, in this order).
DESCRIPTIONS = {
    "txt2img": "text to image with the SD1 demo model: a red circle",
    "img2img": "repaint workflows/inputs/example.png (a red circle) blue, keeping its place",
    "hires_fix": "txt2img, then a 1.5x latent upscale and a second, partial denoising pass at 96 px",
    "sdxl_refiner": "SDXL base to step 20, then the SDXLRefiner node to step 25",
    "sdxl_refiner_advanced": "the same split with two KSamplerAdvanced nodes (ComfyUI's template)",
    "controlnet_canny": "a Canny ControlNet follows the outline of the example image",
    "controlnet_mixed": "two chained ControlNets: the outline throughout, the image itself for the first half",
    "area_composition": "four prompts in the four quadrants of a 128 px canvas (ConditioningSetArea)",
    "lora": "txt2img through the demo 'giant' LoRA: larger shapes than the model draws alone",
    "inpaint": "repaint the example image's circle blue inside a mask (SetLatentNoiseMask), keeping the rest",
    "upscale": "txt2img, then the demo 4x ESRGAN upscale model (UpscaleModelLoader): 256 px",
}

# Each example as rows of columns of node ids, read left to right, top to bottom.
LAYOUTS = {
    "txt2img": [[["4", "5"], ["6", "7"], ["3"], ["8", "9"]]],
    "img2img": [[["4", "10"], ["6", "7", "11"], ["3"], ["8", "9"]]],
    "hires_fix": [[["4", "5"], ["6", "7"], ["3", "10"], ["11", "8", "9"]]],
    "sdxl_refiner": [[["4", "12", "5", "8"], ["6", "7"], ["15", "16", "9"], ["10", "11"]]],
    "sdxl_refiner_advanced": [[["4", "12", "5", "8"], ["6", "7"], ["15", "16", "9"], ["10", "11"]]],
    "controlnet_canny": [[["4", "5"], ["6", "7"], ["3"], ["8", "9"]], [["10"], ["13", "12"], ["14"]]],
    "controlnet_mixed": [[["4", "5"], ["6", "7"], ["3"], ["8", "9"]], [["10"], ["13", "12"], ["14"], ["15"]]],
    "area_composition": [[["4", "5", "7"], ["10", "11", "12", "13"], ["20", "21", "22", "23"], ["31", "32", "33"],
                          ["3", "8", "9"]], [["40", "41", "42", "43"], ["51", "52", "53"]]],
    "lora": [[["4", "5"], ["10"], ["6", "7"], ["3"], ["8", "9"]]],
    "inpaint": [[["4", "10"], ["6", "7", "12"], ["11", "13"], ["3"], ["8", "9"]]],
    "upscale": [[["4", "5"], ["6", "7"], ["3", "10"], ["8", "11"], ["9"]]],
}
GAP = 40.0
TITLE = 30.0  # the title bar sits above a node's `pos`; `size` is its body
TEXT_WIDTH, WIDTH = 340.0, 300.0
IMAGE_ROOM = 200.0  # image nodes are made tall enough to show the picture without growing when it arrives
IMAGE_NODES = {"SaveImage", "PreviewImage", "LoadImage"}
# Samplers show a live preview while they run: the same room, so the layout does not overlap once it appears.
PREVIEW_NODES = {"KSampler", "KSamplerAdvanced", "SDXLRefiner", "SamplerCustom"}


def body_size(entry: dict, info: dict) -> list[float]:
    """The size the editors give a new node of this kind: 20 px per socket row, 26 per widget (68 for a text box)."""
    multiline = [name for name, spec in info["input"].get("required", {}).items()
                 if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("multiline")]
    sockets = sum(1 for slot in entry["inputs"] if "widget" not in slot)
    rows = max(sockets, len(entry["outputs"]))
    widgets = len(entry["widgets_values"])
    height = 20 * rows + 26 * (widgets - len(multiline)) + 108 * len(multiline) + (14 if widgets else 6)
    if entry["type"] in IMAGE_NODES | PREVIEW_NODES:
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


def example_mask(path: Path) -> None:
    """White where the inpaint example repaints (a box around the example image's circle), black elsewhere."""
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((INPAINT_BOX[0], INPAINT_BOX[1], INPAINT_BOX[2] - 1, INPAINT_BOX[3] - 1),
                                    fill=(255, 255, 255))
    image.save(path)


def main() -> None:
    registry = default_registry()
    info = lambda name: registry.object_info(None, name).get(name)  # noqa: E731
    for name, build in EXAMPLES.items():
        prompt = build()
        (ROOT / f"{name}.json").write_text(json.dumps(prompt, indent=2) + "\n")
        ui = lay_out(api_to_ui(prompt, info), LAYOUTS[name], info)
        (ROOT / f"{name}.ui.json").write_text(json.dumps(ui, indent=2) + "\n")
    (ROOT / "examples.txt").write_text("".join(f"{name}\t{DESCRIPTIONS[name]}\n" for name in EXAMPLES))
    example_image(ROOT / "inputs" / "example.png")
    example_mask(ROOT / "inputs" / "example_mask.png")


if __name__ == "__main__":
    main()
