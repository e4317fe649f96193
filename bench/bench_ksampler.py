"""Benchmark: our ksample against StableDiffusionPipeline on the same UNet, steps, seed and guidance.

Prints, per model size: ksample time, pipeline time (latents out, prompt embeddings given, so both time sampling
only), their ratio, one batched (cond + uncond) UNet forward, and the sampler overhead
ksample / (steps x one UNet forward): 1.0 means the sampler costs nothing beyond the UNet.

    python bench/bench_ksampler.py [--steps 20] [--repeats 5] [--device cpu|cuda] [--sizes tiny,medium]

Measurements run in interleaved rounds; times are the minimum over rounds, ratios the median of per-round ratios
(robust to load swings on a shared machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "nodes"), str(ROOT / "tests")]

import torch  # noqa: E402
from timing import synced_time  # noqa: E402
from diffusers import EulerDiscreteScheduler  # noqa: E402

from nodegraph_nodes.diffusion.conditioning import Conditioning  # noqa: E402
from nodegraph_nodes.diffusion.sampling_run import ksample, ksampler_sigmas, prepare_noise  # noqa: E402
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling  # noqa: E402
from support.tiny import SD1_SCHEDULER_CONFIG, tiny_sd1_pipeline, tiny_unet  # noqa: E402

# name -> (UNet overrides, latent size): "tiny" is the test model; "medium" has SD1's block layout at reduced width.
SIZES = {
    "tiny": ({}, 8),
    "medium": (
        dict(
            block_out_channels=(64, 128, 256, 256),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            attention_head_dim=8,
        ),
        32,
    ),
}


def bench(size: str, steps: int, repeats: int, device: str, dtype: torch.dtype) -> None:
    overrides, side = SIZES[size]
    pipe = tiny_sd1_pipeline(scheduler=EulerDiscreteScheduler(**SD1_SCHEDULER_CONFIG))
    if overrides:
        pipe.unet = tiny_unet(**overrides)
    pipe.to(device, dtype)
    positive, negative = pipe.encode_prompt("a photo of a cat", device, 1, True, "")
    pos, neg = Conditioning(positive), Conditioning(negative)
    ms = DiscreteModelSampling(pipe.scheduler.alphas_cumprod)
    latent = torch.zeros(1, 4, side, side)
    sigma0 = float(ksampler_sigmas(ms, "normal", "euler", steps)[0])
    start = ms.noise_scaling(sigma0, prepare_noise(latent, 0), latent)

    def ours():
        ksample(pipe.unet, ms, pos, neg, latent, seed=0, steps=steps, cfg=7.5, sampler_name="euler",
                scheduler="normal")

    def theirs():
        pipe(prompt_embeds=positive, negative_prompt_embeds=negative, num_inference_steps=steps, guidance_scale=7.5,
             output_type="latent", height=side * 8, width=side * 8,
             latents=(start / pipe.scheduler.init_noise_sigma).to(device, dtype))

    x = torch.randn(2, 4, side, side, device=device, dtype=dtype)
    context = torch.cat([negative, positive])
    t = torch.tensor([500.0, 500.0], device=device)

    def unet_forward():
        with torch.inference_mode():
            pipe.unet(x, t, encoder_hidden_states=context, return_dict=False)

    for fn in (ours, theirs, unet_forward):  # warm-up
        fn()
    # Interleaved rounds, so that load swings on a shared machine hit all three alike; ratios are per round.
    unet_steps = lambda: [unet_forward() for _ in range(steps)]  # noqa: E731
    rounds = [(synced_time(ours), synced_time(theirs), synced_time(unet_steps) / steps) for _ in range(repeats)]
    t_ours, t_pipe, t_unet = (min(r[i] for r in rounds) for i in range(3))
    ratio = statistics.median(r[0] / r[1] for r in rounds)
    overhead = statistics.median(r[0] / (steps * r[2]) for r in rounds)
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    print(
        f"{size:>6} ({params:.1f} M params, {side * 8}px, {steps} steps, {device}/{str(dtype)[6:]}): "
        f"ksample {t_ours * 1000:.0f} ms, pipeline {t_pipe * 1000:.0f} ms, ratio {ratio:.3f}; "
        f"UNet forward (batch 2) {t_unet * 1000:.1f} ms; sampler overhead {overhead:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--sizes", default="tiny,medium")
    args = parser.parse_args()
    for size in args.sizes.split(","):
        bench(size, args.steps, args.repeats, args.device, getattr(torch, args.dtype))


if __name__ == "__main__":
    main()
