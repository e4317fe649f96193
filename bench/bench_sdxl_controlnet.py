"""Benchmark: SDXL base + refiner and SD1 + ControlNet sampling, ours (ksample) against diffusers' pipelines.

Both sides get the same tiny models (diffusion/tiny.py), prompt embeddings, steps, guidance and starting latent,
and return latents, so the times compare sampling only:

* sdxl (euler, "simple" = diffusers' "trailing" spacing: the same integer timesteps for any step count dividing
  1000): KSamplerAdvanced-style base (steps 0..switch, leftover noise) + refiner stage (switch..end, no noise added)
  against StableDiffusionXLPipeline(denoising_end=f) + StableDiffusionXLImg2ImgPipeline(denoising_start=f);
* controlnet (dpmpp_2m, "simple" / "trailing"): ksample with a ControlSpec (one ControlNet, strength 0.8) against
  StableDiffusionControlNetPipeline.

    python bench/bench_sdxl_controlnet.py [--steps 20] [--repeats 5] [--sizes 64,256] [--device cpu|cuda]
                                          [--threads N]

Rounds are interleaved; times are the minimum over rounds, the ratio (ours / theirs) the median of per-round
ratios, which is robust to load swings on a shared machine. The last column is the largest latent difference.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes")]

import torch  # noqa: E402
from timing import synced_time  # noqa: E402
from diffusers import (  # noqa: E402
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)

from nodegraph_nodes.diffusion.conditioning import Conditioning, ControlSpec  # noqa: E402
from nodegraph_nodes.diffusion.handles import ModelHandle  # noqa: E402
from nodegraph_nodes.diffusion.sampling_run import ksample, ksampler_sigmas, prepare_noise  # noqa: E402
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling  # noqa: E402
from nodegraph_nodes.diffusion.ops import switch_step  # noqa: E402
from nodegraph_nodes.diffusion.text_encoding import TEXT_FAMILIES, ClipTextEncoder, refiner_time_ids  # noqa: E402
from nodegraph_nodes.diffusion.tiny import tiny_controlnet, tiny_refiner, tiny_sd1, tiny_sdxl  # noqa: E402

FRACTION, CFG, SEED = 0.8, 7.0, 0


def _encode(components, family: str, text: str, time_ids=None) -> Conditioning:
    names = {"sdxl": ("l", "g"), "sdxl_refiner": ("g",), "sd1": ("l",)}[family]
    encoder = ClipTextEncoder(TEXT_FAMILIES[family], dict(zip(names, components.text_encoders)),
                              dict(zip(names, components.tokenizers)))
    cond = encoder.encode(text)
    return Conditioning(cond.embeds, cond.pooled, time_ids)


def _on(cond: Conditioning, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"embeds": cond.embeds.to(device, dtype),
            "pooled": None if cond.pooled is None else cond.pooled.to(device, dtype)}


def _report(name: str, side: int, steps: int, device: str, dtype, rounds, diff: float) -> None:
    t_ours, t_theirs = min(r[0] for r in rounds), min(r[1] for r in rounds)
    ratio = statistics.median(r[0] / r[1] for r in rounds)
    print(f"{name:>10} ({side}px, {steps} steps, {device}/{str(dtype)[6:]}): ours {t_ours * 1000:.0f} ms, "
          f"diffusers {t_theirs * 1000:.0f} ms, ratio {ratio:.3f}, max latent diff {diff:.1e}")


def bench_sdxl(side: int, steps: int, repeats: int, device: str, dtype: torch.dtype) -> None:
    base, refiner = tiny_sdxl(SEED), tiny_refiner(SEED)
    size = {"height": side, "width": side}
    pos, neg = _encode(base, "sdxl", "a red square"), _encode(base, "sdxl", "blurry")
    rpos = _encode(refiner, "sdxl_refiner", "a red square", refiner_time_ids(**size, aesthetic_score=6.0))
    rneg = _encode(refiner, "sdxl_refiner", "blurry", refiner_time_ids(**size, aesthetic_score=2.5))
    for c in (base, refiner):
        c.to(device, dtype)
    ms = DiscreteModelSampling.from_config(base.scheduler_config)
    switch = switch_step(ModelHandle(None, "sdxl_refiner", base.scheduler_config), "euler", "simple", steps,
                         FRACTION)
    latent = torch.zeros(1, 4, side // 8, side // 8)
    sigma0 = float(ksampler_sigmas(ms, "simple", "euler", steps)[0])
    start = ms.noise_scaling(sigma0, prepare_noise(latent, SEED), latent)
    common = dict(seed=SEED, steps=steps, cfg=CFG, sampler_name="euler", scheduler="simple")

    def ours() -> torch.Tensor:
        first = ksample(base.unet, ms, pos, neg, start, **common, add_noise=False, last_step=switch,
                        force_full_denoise=False)
        return ksample(refiner.unet, ms, rpos, rneg, first, **common, add_noise=False, start_step=switch)

    scheduler = lambda c: EulerDiscreteScheduler.from_config(c.scheduler_config, timestep_spacing="trailing")  # noqa
    pipe = StableDiffusionXLPipeline(
        vae=base.vae, text_encoder=base.text_encoders[0], text_encoder_2=base.text_encoders[1],
        tokenizer=base.tokenizers[0], tokenizer_2=base.tokenizers[1], unet=base.unet, scheduler=scheduler(base),
    )
    refine = StableDiffusionXLImg2ImgPipeline(
        vae=refiner.vae, text_encoder=None, text_encoder_2=refiner.text_encoders[0], tokenizer=None,
        tokenizer_2=refiner.tokenizers[0], unet=refiner.unet, scheduler=scheduler(refiner),
        requires_aesthetics_score=True,
    )
    for p in (pipe, refine):
        p.set_progress_bar_config(disable=True)
    b, n, rb, rn = (_on(c, device, dtype) for c in (pos, neg, rpos, rneg))
    latents = (start / pipe.scheduler.init_noise_sigma).to(device, dtype)
    args = dict(num_inference_steps=steps, guidance_scale=CFG, output_type="latent")

    def theirs() -> torch.Tensor:
        first = pipe(prompt_embeds=b["embeds"], pooled_prompt_embeds=b["pooled"], negative_prompt_embeds=n["embeds"],
                     negative_pooled_prompt_embeds=n["pooled"], height=side, width=side, latents=latents,
                     denoising_end=FRACTION, **args).images
        return refine(prompt_embeds=rb["embeds"], pooled_prompt_embeds=rb["pooled"],
                      negative_prompt_embeds=rn["embeds"], negative_pooled_prompt_embeds=rn["pooled"], image=first,
                      denoising_start=FRACTION, **args).images

    diff = float((ours().float().cpu() - theirs().float().cpu()).abs().max())
    rounds = [(synced_time(ours), synced_time(theirs)) for _ in range(repeats)]
    _report("sdxl+ref", side, steps, device, dtype, rounds, diff)


def bench_controlnet(side: int, steps: int, repeats: int, device: str, dtype: torch.dtype) -> None:
    sd1 = tiny_sd1(SEED)
    controlnet = tiny_controlnet(sd1.unet, SEED)
    pos, neg = _encode(sd1, "sd1", "a red circle"), _encode(sd1, "sd1", "blurry")
    sd1.to(device, dtype)
    controlnet.to(device, dtype)
    hint = torch.rand(1, side, side, 3, generator=torch.Generator().manual_seed(1))
    spec = ControlSpec(controlnet, hint, strength=0.8)
    ms = DiscreteModelSampling.from_config(sd1.scheduler_config)
    latent = torch.zeros(1, 4, side // 8, side // 8)
    sigma0 = float(ksampler_sigmas(ms, "simple", "dpmpp_2m", steps)[0])
    start = ms.noise_scaling(sigma0, prepare_noise(latent, SEED), latent) / (1 + sigma0**2) ** 0.5

    def ours() -> torch.Tensor:
        return ksample(sd1.unet, ms, pos.with_control(spec), neg.with_control(spec), latent, seed=SEED, steps=steps,
                       cfg=CFG, sampler_name="dpmpp_2m", scheduler="simple")

    pipe = StableDiffusionControlNetPipeline(
        vae=sd1.vae, text_encoder=sd1.text_encoders[0], tokenizer=sd1.tokenizers[0], unet=sd1.unet,
        controlnet=controlnet, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        scheduler=DPMSolverMultistepScheduler.from_config(sd1.scheduler_config, timestep_spacing="trailing"),
    )
    pipe.set_progress_bar_config(disable=True)
    p, n = _on(pos, device, dtype), _on(neg, device, dtype)

    def theirs() -> torch.Tensor:
        return pipe(prompt_embeds=p["embeds"], negative_prompt_embeds=n["embeds"],
                    image=hint.movedim(-1, 1).to(device, dtype), controlnet_conditioning_scale=0.8,
                    num_inference_steps=steps, guidance_scale=CFG, output_type="latent", height=side, width=side,
                    latents=start.to(device, dtype)).images

    diff = float((ours().float().cpu() - theirs().float().cpu()).abs().max())
    rounds = [(synced_time(ours), synced_time(theirs)) for _ in range(repeats)]
    _report("controlnet", side, steps, device, dtype, rounds, diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="64,256", help="image sides in pixels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    with torch.inference_mode():
        for side in (int(s) for s in args.sizes.split(",")):
            bench_sdxl(side, args.steps, args.repeats, args.device, dtype)
            bench_controlnet(side, args.steps, args.repeats, args.device, dtype)


if __name__ == "__main__":
    main()
