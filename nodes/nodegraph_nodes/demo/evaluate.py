"""Measure how well the shipped demo models follow their prompts, with `checker.py`, and draw a grid of samples.

    python -m nodegraph_nodes.demo.evaluate --models demo_models --samples 96 --table demo_models/eval.md \
        --grid docs/demo_grid.png

Prompts and ground truth come from the data set's held-out split (positioned captions never seen in training, plain
and two-object captions) with seeds not used for training. Sampling uses the diffusers pipelines built from the
components `loader.load_checkpoint` returns (Euler, 20 steps), i.e. the files are read exactly as users' files are.
Reported, per model and setting: the fraction of samples whose main object has the asked colour / shape, whose
named positions are right, and with the asked number of objects; for ControlNet the IoU between the generated
objects and the objects whose Canny edges were given.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    ControlNetModel,
    EulerDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image, ImageDraw

from ..diffusion.loader import load_checkpoint, load_controlnet
from ..diffusion.tiny import Components
from . import checker, dataset
from .train import CHECKPOINT_NAMES, canny_hint

STEPS = 20
DEFAULT_CFG = 7.5
REFINER_STRENGTH = 0.3
BATCH = 16
EVAL_SEED_OFFSET = 50_000  # sampler seeds far from anything used in training


@dataclass
class Result:
    """Adherence rates over the evaluated samples (None where the setting has no such number)."""

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


def euler(components: Components) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler.from_config(components.scheduler_config)


def sd1_pipeline(c: Components, controlnet: ControlNetModel | None = None) -> StableDiffusionPipeline:
    parts = dict(vae=c.vae, text_encoder=c.text_encoders[0], tokenizer=c.tokenizers[0], unet=c.unet,
                 scheduler=euler(c), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if controlnet is None:
        return StableDiffusionPipeline(**parts)
    return StableDiffusionControlNetPipeline(controlnet=controlnet, **parts)


def sdxl_pipeline(c: Components) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline(vae=c.vae, text_encoder=c.text_encoders[0], text_encoder_2=c.text_encoders[1],
                                     tokenizer=c.tokenizers[0], tokenizer_2=c.tokenizers[1], unet=c.unet,
                                     scheduler=euler(c))


def refiner_pipeline(c: Components) -> StableDiffusionXLImg2ImgPipeline:
    return StableDiffusionXLImg2ImgPipeline(vae=c.vae, text_encoder=None, text_encoder_2=c.text_encoders[0],
                                            tokenizer=None, tokenizer_2=c.tokenizers[0], unet=c.unet,
                                            scheduler=euler(c), requires_aesthetics_score=True)


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """Pipeline output (float NHWC in [0, 1]) as uint8 RGB images."""
    return [np.round(np.clip(im, 0, 1) * 255).astype(np.uint8) for im in images]


def quiet(pipeline: Any) -> Any:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate(call: Callable[..., object], prompts: list[str], seeds: list[int], **kwargs: object) -> list[np.ndarray]:
    """Run a pipeline in batches of BATCH, one torch.Generator per image so each result depends only on its seed."""
    images: list[np.ndarray] = []
    for i in range(0, len(prompts), BATCH):
        generators = [torch.Generator().manual_seed(s) for s in seeds[i:i + BATCH]]
        batch_kwargs = {k: v[i:i + BATCH] if isinstance(v, list) else v for k, v in kwargs.items()}
        out = call(prompt=prompts[i:i + BATCH], generator=generators, num_inference_steps=STEPS, output_type="np",
                   **batch_kwargs)
        images += to_uint8(out.images)  # type: ignore[attr-defined]
    return images


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


def timed(fn: Callable[[], list[np.ndarray]]) -> tuple[list[np.ndarray], float]:
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


def evaluate(models: Path, n: int, log: Callable[[str], None] = print) -> tuple[list[Result], dict[str, list]]:
    """Every evaluation of the README table; also returns example images for the grid."""
    truth = list(dataset.samples(0, n, "held_out"))
    captions = [s.caption for s in truth]
    seeds = [EVAL_SEED_OFFSET + i for i in range(n)]
    results: list[Result] = []
    examples: dict[str, list] = {"captions": captions}

    def record(name: str, images: list[np.ndarray], seconds: float, iou: float | None = None) -> None:
        result = adherence(name, images, captions, seconds)
        result.iou = iou
        results.append(result)
        examples[name] = images
        log(f"{name}: {result}")

    recon = load_checkpoint(models / CHECKPOINT_NAMES["sd1"], dtype=torch.float32)
    record("ground truth (checker self-check)", [s.image for s in truth], 0.0)
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([s.image for s in truth]).astype(np.float32).transpose(0, 3, 1, 2))
        decoded = recon.vae.decode(recon.vae.encode(pixels / 127.5 - 1).latent_dist.mean).sample
    record("ground truth through the SD1 VAE", to_uint8(decoded.permute(0, 2, 3, 1).numpy() / 2 + 0.5), 0.0)

    sd1 = quiet(sd1_pipeline(recon))
    images, secs = timed(lambda: generate(sd1, captions, seeds, guidance_scale=DEFAULT_CFG))
    record(f"sd1 cfg {DEFAULT_CFG}", images, secs)
    images, secs = timed(lambda: generate(sd1, [""] * n, seeds, guidance_scale=1.0))
    record("sd1 cfg 1, empty prompt (chance)", images, secs)

    controlnet = load_controlnet(models / CHECKPOINT_NAMES["controlnet"], dtype=torch.float32)
    hints = [Image.fromarray((canny_hint(s.image)[0] * 255).astype(np.uint8)).convert("RGB") for s in truth]
    examples["hints"] = [np.asarray(h) for h in hints]
    cn = quiet(sd1_pipeline(recon, controlnet))
    images, secs = timed(lambda: generate(cn, captions, seeds, image=hints, guidance_scale=DEFAULT_CFG))
    record(f"sd1 + canny ControlNet cfg {DEFAULT_CFG}", images, secs, iou=mask_iou(images, truth))
    baseline_iou = mask_iou(examples[f"sd1 cfg {DEFAULT_CFG}"], truth)
    log(f"IoU of plain SD1 samples with the same ground truth (no edges given): {baseline_iou:.3f}")
    examples["baseline_iou"] = [baseline_iou]

    xl = load_checkpoint(models / CHECKPOINT_NAMES["sdxl"], dtype=torch.float32)
    base = quiet(sdxl_pipeline(xl))
    images, secs = timed(lambda: generate(base, captions, seeds, guidance_scale=DEFAULT_CFG))
    record(f"sdxl base cfg {DEFAULT_CFG}", images, secs)
    base_images = images

    refiner = quiet(refiner_pipeline(load_checkpoint(models / CHECKPOINT_NAMES["sdxl_refiner"],
                                                     dtype=torch.float32)))
    inits = [Image.fromarray(im) for im in base_images]
    images, secs = timed(lambda: generate(refiner, captions, seeds, image=inits, strength=REFINER_STRENGTH,
                                          guidance_scale=DEFAULT_CFG))
    record(f"sdxl base + refiner (strength {REFINER_STRENGTH})", images, secs)
    return results, examples


def table(results: list[Result], n: int, baseline_iou: float) -> str:
    """The README's Markdown table."""
    lines = [
        f"Held-out captions and seeds, n = {n} per row, Euler {STEPS} steps, 64x64 "
        "(colour / shape: the main object, or for two-object captions both objects; position: over the captions "
        "that name one; count: exactly the asked number of objects).",
        "",
        "| setting | colour | shape | colour, 1 object | shape, 1 object | position | count | edge IoU | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        iou = f"{r.iou:.2f}" if r.iou is not None else ""
        lines.append(f"| {r.name} | {r.colour:.0%} | {r.shape:.0%} | {r.single_colour:.0%} | {r.single_shape:.0%} "
                     f"| {r.position:.0%} | {r.count:.0%} | {iou} "
                     f"| {r.seconds:.0f} |")
    lines += ["", f"IoU of plain SD1 samples (no edges) with the same ground truth: {baseline_iou:.2f}."]
    return "\n".join(lines) + "\n"


def draw_grid(examples: dict[str, list], path: Path, columns: int = 8, scale: int = 2) -> None:
    """Rows: ground truth, SD1, SD1 at cfg 1 without prompt, Canny hint, ControlNet, SDXL, SDXL + refiner."""
    rows = [(name, examples[name]) for name in examples if name not in ("captions", "baseline_iou")
            and "VAE" not in name]
    tile = dataset.IMAGE_SIZE * scale
    label_w, caption_h = 230, 30
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate the demo models' prompt adherence.")
    parser.add_argument("--models", type=Path, default=Path("demo_models"))
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--table", type=Path, help="write the Markdown table here")
    parser.add_argument("--grid", type=Path, help="write a grid of samples here (PNG)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results, examples = evaluate(args.models, args.samples)
    text = table(results, args.samples, examples["baseline_iou"][0])
    print(text)
    if args.table:
        args.table.write_text(text, encoding="utf-8")
    if args.grid:
        draw_grid(examples, args.grid)


if __name__ == "__main__":
    main()
