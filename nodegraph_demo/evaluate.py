"""Measure how well the demo models follow their prompts, by running the example workflows, and score single images.

    python -m nodegraph_demo.evaluate --models demo_models --samples 96 --table demo_models/eval.md \
        --grid docs/demo_grid.png
    python -m nodegraph_demo.evaluate --image output/txt2img_00001_.png   # prompt read from the PNG

Every generated sample comes from one of the shipped example workflows (`workflows/*.json`) run by the engine, as
`nodegraph run` would run it, with only its prompt, seed (and, for ControlNet, its input image) replaced: the
figures are what users get. Prompts and ground truth come from the data set's held-out split (positioned captions
never seen in training, plus plain and two-object captions) with seeds far from the training ones. Reported per
setting: the fraction of samples whose objects have the asked colour / shape (one-object captions also apart),
whose named positions are right, and with the asked number of objects; for ControlNet the IoU between the generated
objects and the objects whose Canny edges were given.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from nodegraph.engine import Folders
from nodegraph.paths import default_models_dirs, project_dir
from nodegraph.run_once import PromptRunner

from . import checker, dataset

EVAL_SEED_OFFSET = 50_000  # sampler seeds far from anything used in training
NO_PROMPT_CFG = 1.0  # the "chance" row: no guidance and an empty prompt

Workflow = dict[str, dict[str, Any]]


@dataclass
class Result:
    """Adherence rates over the evaluated samples."""

    name: str
    n: int
    colour: float
    shape: float
    position: float
    count: float
    single_colour: float = 0.0  # colour / shape over the one-object captions only
    single_shape: float = 0.0
    iou: float | None = None
    seconds: float = 0.0


# --- the evaluated workflows: shipped examples with the prompt, seed and input image replaced --------------------


def example(name: str) -> Workflow:
    return json.loads((project_dir("workflows") / f"{name}.json").read_text(encoding="utf-8"))


def set_prompt(workflow: Workflow, caption: str) -> None:
    """Replace the positive prompt: the text of every encode node whose text is not empty (the negatives are)."""
    for node in workflow.values():
        for key in ("text", "text_g", "text_l"):
            if isinstance(node["inputs"].get(key), str) and node["inputs"][key]:
                node["inputs"][key] = caption


def set_seed(workflow: Workflow, seed: int) -> None:
    for node in workflow.values():
        for key in ("seed", "noise_seed"):
            if key in node["inputs"]:
                node["inputs"][key] = seed


def sd1_txt2img(caption: str, seed: int, cfg: float | None = None) -> Workflow:
    w = example("txt2img")
    set_prompt(w, caption)
    set_seed(w, seed)
    if cfg is not None:
        for node in w.values():
            if node["class_type"] == "KSampler":
                node["inputs"]["cfg"] = cfg
    return w


def sd1_controlnet(caption: str, seed: int, image_name: str) -> Workflow:
    w = example("controlnet_canny")
    set_prompt(w, caption)
    set_seed(w, seed)
    for node in w.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = image_name
    return w


def sdxl_refined(caption: str, seed: int) -> Workflow:
    """The SDXL example as shipped: base for the first steps, then the refiner."""
    w = example("sdxl_refiner")
    set_prompt(w, caption)
    set_seed(w, seed)
    return w


def sdxl_base_only(caption: str, seed: int) -> Workflow:
    """The SDXL example with the base model doing every step and decoding its own result (no refiner)."""
    w = sdxl_refined(caption, seed)
    base_id = next(i for i, n in w.items() if n["class_type"] == "KSamplerAdvanced")
    base = w[base_id]["inputs"]
    base.update(end_at_step=10000, return_with_leftover_noise="disable")
    for node in w.values():
        if node["class_type"] == "VAEDecode":
            node["inputs"]["samples"] = [base_id, 0]
    return w


def example_cfg(name: str) -> float:
    """The guidance scale the example workflow's KSampler runs with, as shipped."""
    return float(next(n["inputs"]["cfg"] for n in example(name).values() if n["class_type"] == "KSampler"))


# --- running workflows --------------------------------------------------------------------------------------------


class WorkflowRunner(PromptRunner):
    """Validates and runs workflows on one engine executor (loaded models stay cached between runs)."""

    def __init__(self, models: Path, work_dir: Path, settings: dict[str, Any] | None = None):
        super().__init__(Folders(models_dirs=[models, *default_models_dirs()], input_dir=work_dir / "input",
                                 output_dir=work_dir / "output", temp_dir=work_dir / "temp",
                                 settings=settings or {}))
        self.folders.input_dir.mkdir(parents=True, exist_ok=True)

    def save_input(self, name: str, image: np.ndarray) -> str:
        Image.fromarray(image).save(self.folders.input_dir / name)
        return name

    async def images(self, workflow: Workflow) -> list[np.ndarray]:
        """Run `workflow`; the images its SaveImage nodes wrote, as uint8 RGB arrays."""
        checked = self.validate(workflow)
        if not checked.ok:
            raise RuntimeError(f"workflow invalid: {checked.error} {checked.node_errors}")
        result = await self.run_async(checked, "evaluate")
        if not result.ok:
            raise RuntimeError(f"workflow {result.status}: {result.error}")
        images = []
        for ui in result.outputs.values():
            for item in ui.get("images", []):
                path = self.folders.output_dir / item.get("subfolder", "") / item["filename"]
                images.append(np.asarray(Image.open(path).convert("RGB")))
        return images


# --- scoring --------------------------------------------------------------------------------------------------


def adherence(name: str, images: list[np.ndarray], captions: list[str], seconds: float) -> Result:
    scores = [checker.score(im, cap) for im, cap in zip(images, captions, strict=True)]
    rate = lambda attr: float(np.mean([getattr(s, attr) for s in scores]))  # noqa: E731
    # position only where the caption names one (otherwise any place is right)
    named = [s.position for s, cap in zip(scores, captions, strict=True)
             if any(w.position for w in checker.parse_caption(cap))]
    single = [s for s, cap in zip(scores, captions, strict=True) if len(checker.parse_caption(cap)) == 1]
    return Result(name, len(scores), rate("colour"), rate("shape"), float(np.mean(named)) if named else 1.0,
                  rate("count"), float(np.mean([s.colour for s in single])), float(np.mean([s.shape for s in single])),
                  seconds=seconds)


def mask_iou(images: list[np.ndarray], truth: list[dataset.Sample]) -> float:
    """Mean IoU between the detected objects of each image and the ground-truth objects of its hint's sample."""
    ious = []
    for image, sample in zip(images, truth, strict=True):
        found = np.zeros(image.shape[:2], bool)
        for d in checker.detect(image):
            found |= d.mask
        wanted = np.zeros_like(found)
        for o in sample.objects:
            wanted |= o.mask
        ious.append((found & wanted).sum() / max((found | wanted).sum(), 1))
    return float(np.mean(ious))


def vae_round_trip(models: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    """`images` encoded and decoded by the SD1 demo checkpoint's VAE: the ceiling any sample can reach."""
    import torch

    from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file
    from .train import CHECKPOINT_NAMES

    vae = read_checkpoint_file(models / CHECKPOINT_NAMES["sd1"], dtype=torch.float32).vae
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack(images).astype(np.float32).transpose(0, 3, 1, 2)) / 127.5 - 1
        decoded = vae.decode(vae.encode(pixels).latent_dist.mean).sample
    out = (decoded.permute(0, 2, 3, 1).numpy() / 2 + 0.5).clip(0, 1)
    return [np.round(im * 255).astype(np.uint8) for im in out]


def example_edges(images: list[np.ndarray]) -> list[np.ndarray]:
    """What the ControlNet example's Canny node makes of `images` (for the grid)."""
    import torch

    from nodegraph_nodes.diffusion.image_ops import canny_edges

    canny = next(n for n in example("controlnet_canny").values() if n["class_type"] == "Canny")["inputs"]
    pixels = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
    edges = canny_edges(pixels, canny["low_threshold"], canny["high_threshold"]).numpy()
    return [(e * 255).astype(np.uint8) for e in edges]


# --- the whole evaluation -----------------------------------------------------------------------------------------


def evaluate(models: Path, n: int, work_dir: Path, log: Callable[[str], None] = print,
             settings: dict[str, Any] | None = None) -> tuple[list[Result], dict[str, Any]]:
    """Every row of the README table; also returns the images for the grid."""
    truth = list(dataset.samples(0, n, "held_out"))
    captions = [s.caption for s in truth]
    seeds = [EVAL_SEED_OFFSET + i for i in range(n)]
    runner = WorkflowRunner(models, work_dir, settings)
    results: list[Result] = []
    examples: dict[str, Any] = {"captions": captions}
    cfg = example_cfg("txt2img")  # the example as shipped: nothing but the prompt and seed is changed

    def record(name: str, images: list[np.ndarray], seconds: float, iou: float | None = None) -> None:
        result = adherence(name, images, captions, seconds)
        result.iou = iou
        results.append(result)
        examples[name] = images
        log(f"{name}: {result}")

    async def generate(make: Callable[[int], Workflow]) -> tuple[list[np.ndarray], float]:
        start = time.perf_counter()
        images = []
        for i in range(n):
            (image,) = await runner.images(make(i))
            images.append(image)
        return images, time.perf_counter() - start

    async def rows() -> None:
        record("ground truth (checker self-check)", [s.image for s in truth], 0.0)
        record("ground truth through the demo VAE", vae_round_trip(models, [s.image for s in truth]), 0.0)

        images, secs = await generate(lambda i: sd1_txt2img(captions[i], seeds[i]))
        record(f"SD1 txt2img example (cfg {cfg:g})", images, secs)
        examples["baseline_iou"] = mask_iou(images, truth)
        images, secs = await generate(lambda i: sd1_txt2img("", seeds[i], NO_PROMPT_CFG))
        record(f"SD1, cfg {NO_PROMPT_CFG:g} and an empty prompt (chance)", images, secs)

        # the hint: the held-out ground-truth image, through the example's own LoadImage -> Canny nodes
        names = [runner.save_input(f"heldout_{i:04d}.png", s.image) for i, s in enumerate(truth)]
        examples["Canny edges given (hint)"] = example_edges([s.image for s in truth])
        images, secs = await generate(lambda i: sd1_controlnet(captions[i], seeds[i], names[i]))
        record("SD1 + Canny ControlNet (controlnet_canny example)", images, secs, iou=mask_iou(images, truth))

        images, secs = await generate(lambda i: sdxl_base_only(captions[i], seeds[i]))
        record("SDXL base alone (sdxl_refiner example, refiner off)", images, secs)
        images, secs = await generate(lambda i: sdxl_refined(captions[i], seeds[i]))
        record("SDXL base + refiner (sdxl_refiner example)", images, secs)

    asyncio.run(rows())
    return results, examples


def table(results: list[Result], n: int, baseline_iou: float) -> str:
    """The README's Markdown table."""
    lines = [
        f"Held-out captions and seeds, n = {n} per row, each sample one run of the named example workflow "
        "(64x64). colour / shape: of the main object, or for two-object captions of both; position: over the "
        "captions that name one; count: exactly the asked number of objects.",
        "",
        "| setting | colour | shape | colour, 1 object | shape, 1 object | position | count | edge IoU | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        iou = f"{r.iou:.2f}" if r.iou is not None else ""
        lines.append(f"| {r.name} | {r.colour:.0%} | {r.shape:.0%} | {r.single_colour:.0%} | {r.single_shape:.0%} "
                     f"| {r.position:.0%} | {r.count:.0%} | {iou} | {r.seconds:.0f} |")
    lines += ["", f"IoU of the plain SD1 samples (no edges given) with the same ground truth: {baseline_iou:.2f}."]
    return "\n".join(lines) + "\n"


def draw_grid(examples: dict[str, Any], path: Path, columns: int = 8, scale: int = 2) -> None:
    """Rows: ground truth, SD1, SD1 without prompt, Canny hint, ControlNet, SDXL, SDXL + refiner; a column per
    caption."""
    rows = [(name, images) for name, images in examples.items()
            if name not in ("captions", "baseline_iou") and "VAE" not in name]
    tile = dataset.IMAGE_SIZE * scale
    label_w, caption_h = 250, 30
    grid = Image.new("RGB", (label_w + columns * tile, caption_h + len(rows) * tile), "white")
    draw = ImageDraw.Draw(grid)
    for c in range(columns):
        words = examples["captions"][c].split(" ")
        half = (len(words) + 1) // 2
        for line, text in enumerate((" ".join(words[:half]), " ".join(words[half:]))):
            draw.text((label_w + c * tile + 2, 2 + 13 * line), text, fill="black")
    for r, (name, images) in enumerate(rows):
        draw.text((4, caption_h + r * tile + tile // 2 - 6), name.replace(" (", "\n("), fill="black")
        for c in range(columns):
            im = Image.fromarray(images[c]).resize((tile, tile), Image.NEAREST)
            grid.paste(im, (label_w + c * tile, caption_h + r * tile))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


# --- scoring one image ----------------------------------------------------------------------------------------


def positive_prompt(workflow: Workflow) -> str | None:
    """The positive prompt of an API-format workflow: each sampler's `positive` input followed back through
    conditioning nodes (ControlNet apply, ...) to the text encoder that made it; None if there is none."""
    for node in workflow.values():
        link = node.get("inputs", {}).get("positive")
        seen = set()
        while isinstance(link, list) and link[0] not in seen:
            seen.add(link[0])
            inputs = workflow.get(str(link[0]), {}).get("inputs", {})
            for key in ("text", "text_g"):
                if isinstance(inputs.get(key), str):
                    return inputs[key]
            link = inputs.get("positive", inputs.get("conditioning"))
    return None


def prompt_of_png(path: Path) -> str:
    """The positive prompt of the workflow a nodegraph / ComfyUI PNG carries (its "prompt" text chunk)."""
    text = Image.open(path).info.get("prompt")
    if not text:
        raise ValueError(f"{path} carries no workflow (saved with --disable-metadata?); pass --prompt")
    prompt = positive_prompt(json.loads(text))
    if prompt is None:
        raise ValueError(f"no positive prompt found in the workflow of {path}; pass --prompt")
    return prompt


def score_image(path: Path, prompt: str | None) -> tuple[str, checker.Score, list[checker.Detection]]:
    caption = prompt if prompt is not None else prompt_of_png(path)
    image = checker.at_dataset_size(np.asarray(Image.open(path).convert("RGB")))
    return caption, checker.score(image, caption), checker.detect(image)


# --- command line ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate the demo models' prompt adherence by running the example workflows on held-out "
                    "captions, or (--image) score one picture against its prompt.")
    parser.add_argument("--models", type=Path, default=project_dir("demo_models"),
                        help="models root holding the demo checkpoints (default: the bundled ones)")
    parser.add_argument("--samples", type=int, default=96, help="held-out captions (and seeds) per setting")
    parser.add_argument("--table", type=Path, help="write the Markdown table here")
    parser.add_argument("--grid", type=Path, help="write a grid of samples here (PNG)")
    parser.add_argument("--device", default="auto", help="device for the models (auto, cpu, cuda, ...)")
    parser.add_argument("--image", type=Path, help="score this image instead; exit status 0 if it matches")
    parser.add_argument("--prompt", help="with --image: the caption to check (default: read from the PNG)")
    args = parser.parse_args(argv)

    if args.image:
        try:
            caption, result, found = score_image(args.image, args.prompt)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"prompt: {caption!r}")
        print("found: " + (", ".join(f"{d.colour} {d.shape} at the {' '.join(d.position)} ({d.area} px)"
                                     for d in found) or "no object"))
        print(f"colour {'ok' if result.colour else 'WRONG'}, shape {'ok' if result.shape else 'WRONG'}, "
              f"position {'ok' if result.position else 'WRONG'}, count {'ok' if result.count else 'WRONG'}")
        print("matches its prompt" if result.all else "does not match its prompt")
        return 0 if result.all else 1

    with tempfile.TemporaryDirectory(prefix="nodegraph-eval-") as work:
        results, examples = evaluate(args.models, args.samples, Path(work), settings={"device": args.device})
    text = table(results, args.samples, examples["baseline_iou"])
    print(text)
    if args.table:
        args.table.write_text(text, encoding="utf-8")
    if args.grid:
        draw_grid(examples, args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
