"""CFG++ samplers (Chung et al. 2024, "CFG++: Manifold-constrained classifier free guidance"): the step towards the
next noise level re-noises with the *unconditional* prediction's noise estimate while jumping to the guided
prediction, which keeps the trajectory near the data manifold at low guidance scales.

They need the unconditional prediction next to the guided one. The denoiser contract for that is one attribute:
after each call, `model.uncond_denoised` holds the unconditional x0 of that call (`denoiser.CFGDenoiser` sets it
when built with `keep_uncond=True`, computing the unconditional half even at cfg 1, as ComfyUI's post-CFG hook
does with its cfg-1 shortcut disabled). Same call shape and callbacks as `samplers`.
"""
from __future__ import annotations

import math

import torch

from .samplers import Denoiser, NoiseSampler, StepCallback, _call, _floats, _global_noise, ancestral_step


def call_with_uncond(model: Denoiser, x: torch.Tensor, sigma: float, extra_args) -> tuple[torch.Tensor, torch.Tensor]:
    """(guided x0, unconditional x0) for one evaluation."""
    denoised = _call(model, x, sigma, extra_args)
    uncond = getattr(model, "uncond_denoised", None)
    if uncond is None:
        raise ValueError(
            "a CFG++ sampler needs the unconditional prediction: the denoiser must set `uncond_denoised` "
            "(a CFG guider does; use a plain sampler with BasicGuider)"
        )
    return denoised, uncond


def denoise_with_uncond(model: Denoiser, x: torch.Tensor, sigma: float, i: int, extra_args,
                        callback: StepCallback | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step i's first evaluation as (guided x0, unconditional x0), the guided one reported to the callback."""
    denoised, uncond = call_with_uncond(model, x, sigma, extra_args)
    if callback is not None:
        callback(i, x, denoised)
    return denoised, uncond


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Euler ancestral, CFG++: x <- guided x0 + sigma_down * (unconditional noise estimate), plus fresh noise."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised, uncond = denoise_with_uncond(model, x, s[i], i, extra_args, callback)
        if s[i + 1] == 0:
            x = denoised
            continue
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        x = denoised + (x - uncond) * (sigma_down / s[i])
        if eta > 0 and s_noise > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * (s_noise * sigma_up)
    return x


def sample_euler_cfg_pp(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None,
                        callback: StepCallback | None = None) -> torch.Tensor:
    """Euler, CFG++ (the ancestral form with eta = 0: no noise is drawn)."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=extra_args, callback=callback, eta=0.0,
                                         s_noise=0.0)


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral on the unconditional prediction, with the guidance vector (guided - unconditional
    x0 of the step's first evaluation) added back after each step."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised, uncond = denoise_with_uncond(model, x, s[i], i, extra_args, callback)
        guidance = denoised - uncond
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        if sigma_down == 0:
            x = uncond
        else:
            sigma_mid = (s[i] * sigma_down) ** 0.5  # the midpoint in lambda = -log sigma
            x_mid = x * (sigma_mid / s[i]) - uncond * math.expm1(math.log(sigma_mid / s[i]))
            _, uncond_mid = call_with_uncond(model, x_mid, sigma_mid, extra_args)
            x = x * (sigma_down / s[i]) - uncond_mid * math.expm1(math.log(sigma_down / s[i]))
        if s[i + 1] > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * (s_noise * sigma_up)
        x = x + guidance
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: StepCallback | None = None
) -> torch.Tensor:
    """DPM-Solver++(2M), CFG++: the multistep update whose noise part uses the unconditional predictions, landing
    on the guided one."""
    s = _floats(sigmas)
    old_uncond: torch.Tensor | None = None
    for i in range(len(s) - 1):
        denoised, uncond = denoise_with_uncond(model, x, s[i], i, extra_args, callback)
        ratio = s[i + 1] / s[i]  # e^-h, h = lambda_next - lambda
        mix = -ratio * uncond
        if old_uncond is not None and s[i + 1] > 0:
            h = math.log(s[i]) - math.log(s[i + 1])
            r = (math.log(s[i - 1]) - math.log(s[i])) / h
            mix = mix - (denoised - old_uncond) * (math.expm1(-h) / (2 * r))
        x = denoised + mix + x * ratio
        old_uncond = uncond
    return x
