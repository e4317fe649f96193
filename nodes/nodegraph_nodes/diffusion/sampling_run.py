"""KSampler, KSamplerAdvanced and SamplerCustom semantics on top of the samplers and schedules.

What the nodes promise (ComfyUI's behaviour, docs/compat.md §5):

* noise comes from `prepare_noise`: drawn on the CPU from a generator seeded like `torch.manual_seed(seed)`, so a
  seed gives the same image on any device; `batch_index` picks per-sample noise as if the whole batch were drawn;
* `denoise` < 1 computes the schedule for int(steps / denoise) steps and keeps its last steps + 1 sigmas;
  `denoise` <= 0 returns the latent unchanged; dpm_2(_ancestral) / uni_pc(_bh2) compute steps + 1 and drop the
  penultimate sigma;
* KSamplerAdvanced: `last_step` cuts the schedule after that step (its final sigma set to 0 when
  `force_full_denoise`), `start_step` starts there (returning the latent unchanged when nothing is left);
  `add_noise=False` adds no noise, so a second stage continues a first stage's leftover noise;
* the starting point is latent + noise * sigma0, or noise * sqrt(1 + sigma0^2) at the top of the schedule;
* a `noise_mask` (the LATENT's, any sampler) resamples only the masked area, and an inpainting UNet gets its mask and
  masked-image channels (inpaint.py); `differential_diffusion` (a strength, from the MODEL) makes the mask per-step.

Latents go in and out as float32 CPU tensors [B, 4, h, w] in the UNet's latent space (VAE latents times the VAE's
scaling factor); the UNet runs on its own device and dtype.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .conditioning import Conditioning
from .inpaint import (
    RANDOM_INPAINT_NOISE,
    InpaintDenoiser,
    concat_channels,
    differential_mask_function,
    latent_mask,
)
from .sigma_table import DiscreteModelSampling
from .names import DISCARD_PENULTIMATE_SIGMA_SAMPLERS
from . import regions
from .sampler_registry import NEEDS_UNCOND, SAMPLER_NOISE, sampler_function
from .schedules import calculate_sigmas

# callback(step, total, x, denoised): step in 0..total-1, called once per step after its first model evaluation;
# x (before the step's update) and denoised live on the UNet's device. Raising inside it stops sampling.
ProgressCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def prepare_noise(latent: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """Unit Gaussian noise shaped like `latent`, drawn on the CPU from a generator seeded with `seed`.

    Without `batch_index` the whole batch is drawn at once (what `torch.manual_seed(seed); torch.randn(shape)`
    gives). With it, sample i gets the noise that sample batch_index[i] would get in a one-at-a-time draw of
    samples 0..max(batch_index), so a latent cut out of a batch keeps its noise.
    """
    generator = torch.Generator().manual_seed(seed)
    if batch_index is None:
        return torch.randn(latent.shape, generator=generator, dtype=torch.float32)
    one = (1, *latent.shape[1:])
    draws = [torch.randn(one, generator=generator, dtype=torch.float32) for _ in range(max(batch_index) + 1)]
    return torch.cat([draws[i] for i in batch_index])


def ksampler_sigmas(
    model_sampling: DiscreteModelSampling, scheduler: str, sampler_name: str, steps: int, denoise: float = 1.0
) -> torch.Tensor:
    """The sigmas KSampler walks for (scheduler, sampler, steps, denoise); empty when denoise <= 0."""
    if denoise <= 0:
        return torch.zeros(0)
    total = steps if denoise > 0.9999 else int(steps / denoise)
    discard = sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    sigmas = calculate_sigmas(model_sampling, scheduler, total + 1 if discard else total)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas[-(steps + 1) :]


def slice_sigmas(
    sigmas: torch.Tensor, start_step: int | None, last_step: int | None, force_full_denoise: bool
) -> torch.Tensor | None:
    """KSamplerAdvanced's cut of a schedule; None when start_step leaves no step to take."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas


def ksample(
    unet: torch.nn.Module,
    model_sampling: DiscreteModelSampling,
    positive: Conditioning,
    negative: Conditioning | None,
    latent: torch.Tensor,
    *,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float = 1.0,
    add_noise: bool = True,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = True,
    batch_index: Sequence[int] | None = None,
    callback: ProgressCallback | None = None,
    interrupt: Callable[[], None] | None = None,
    patches: Sequence[Any] = (),
    noise_mask: torch.Tensor | None = None,
    differential_diffusion: float | None = None,
) -> torch.Tensor:
    """Sample like ComfyUI's KSampler (defaults) / KSamplerAdvanced (start_step, last_step, add_noise,
    force_full_denoise = not return_with_leftover_noise). Returns the new latent (float32, CPU)."""
    sigmas = ksampler_sigmas(model_sampling, scheduler, sampler_name, steps, denoise)
    sliced = slice_sigmas(sigmas, start_step, last_step, force_full_denoise)
    if sliced is None:
        return latent.float().clone()
    return sample_with_sigmas(
        unet, model_sampling, positive, negative, latent, sliced,
        seed=seed, cfg=cfg, sampler_name=sampler_name, add_noise=add_noise, batch_index=batch_index,
        callback=callback, interrupt=interrupt, patches=patches, noise_mask=noise_mask,
        differential_diffusion=differential_diffusion,
    )


def sample_with_sigmas(
    unet: torch.nn.Module,
    model_sampling: DiscreteModelSampling,
    positive: Conditioning,
    negative: Conditioning | None,
    latent: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    seed: int,
    cfg: float,
    sampler_name: str,
    add_noise: bool = True,
    batch_index: Sequence[int] | None = None,
    callback: ProgressCallback | None = None,
    interrupt: Callable[[], None] | None = None,
    sampler_options: Mapping[str, Any] | None = None,
    patches: Sequence[Any] = (),
    make_denoiser: Callable[..., CFGDenoiser] | None = None,
    noise_mask: torch.Tensor | None = None,
    differential_diffusion: float | None = None,
) -> torch.Tensor:
    """Sample along explicit sigmas (SamplerCustom, SamplerCustomAdvanced). An empty or single-sigma schedule
    returns the latent. `sampler_options` are the sampler's keyword options (a Sampler* node's eta, s_noise...);
    `patches` the MODEL's CFG patches; `make_denoiser(keep_uncond=..., patches=...)` builds another guider's
    denoiser (guidance.Guider) instead of the positive / negative CFG one. `interrupt()` raises to stop between
    model calls (CFGDenoiser.check_interrupt). `noise_mask`: the LATENT's mask (1 = resample);
    `differential_diffusion`: the strength of a model patched by DifferentialDiffusion, or None."""
    latent = latent.float().cpu()
    if len(sigmas) < 2:
        return latent.clone()
    sample = sampler_function(sampler_name)

    sigmas = sigmas.float().cpu()
    sigma0 = float(sigmas[0])
    noise = prepare_noise(latent, seed, batch_index) if add_noise else torch.zeros_like(latent)
    keep_uncond = sampler_name in NEEDS_UNCOND
    if make_denoiser is None:
        denoiser = regions.make_denoiser(unet, model_sampling, positive, negative, cfg, keep_uncond=keep_uncond,
                                         patches=patches)
    else:
        denoiser = make_denoiser(keep_uncond=keep_uncond, patches=patches)
    if interrupt is not None and hasattr(denoiser, "check_interrupt"):
        denoiser.interrupt = interrupt  # checked between model calls (CFGDenoiser.check_interrupt)
    x = model_sampling.noise_scaling(sigma0, noise, latent).to(denoiser.device)
    model = denoiser
    extra = unet.config.in_channels - latent.shape[1]
    if extra > 0:  # an inpainting UNet: mask + masked-image channels per conditioning
        if not hasattr(denoiser, "set_concat"):
            raise ValueError("inpainting (9-channel) models cannot be sampled with regional conditioning (several "
                             "prompts, areas, masks or timestep ranges) yet; use one plain prompt per side")
        denoiser.set_concat(lambda c: concat_channels(c, extra, latent, noise_mask))
    if noise_mask is not None:
        inpaint_noise = noise
        if sampler_name in RANDOM_INPAINT_NOISE:  # ComfyUI's ddim: fresh noise (seed + 1) for the kept area
            inpaint_noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed + 1))
        mask_function = None
        if differential_diffusion is not None:
            mask_function = differential_mask_function(model_sampling, sigmas, differential_diffusion)
        model = InpaintDenoiser(
            denoiser, latent.to(denoiser.device), inpaint_noise.to(denoiser.device),
            latent_mask(noise_mask, latent.shape).to(denoiser.device), mask_function,
        )

    kwargs: dict[str, Any] = dict(sampler_options or {})
    if sampler_name in SAMPLER_NOISE:
        kwargs["noise_sampler"] = SAMPLER_NOISE[sampler_name](x, seed, sigmas)
    if callback is not None:
        total = len(sigmas) - 1
        # adaptive samplers may take more steps than the schedule has: progress stops at the last one
        kwargs["callback"] = lambda i, x_i, denoised: callback(min(i, total - 1), total, x_i, denoised)
    with torch.inference_mode():
        out = sample(model, x, sigmas, **kwargs)
    return out.float().cpu()


def _with_unclip_seed(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """unCLIP models noise their image embeddings with the sampler's seed (unclip.sampling_seed)."""
    from functools import wraps

    from . import unclip

    @wraps(fn)
    def run(*args: Any, seed: int, **kwargs: Any) -> torch.Tensor:
        with unclip.sampling_seed(seed):
            return fn(*args, seed=seed, **kwargs)

    return run


sample_with_sigmas = _with_unclip_seed(sample_with_sigmas)
