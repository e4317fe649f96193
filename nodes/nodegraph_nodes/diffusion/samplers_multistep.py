"""More deterministic (and ancestral) solvers of the probability-flow ODE, with ComfyUI's names and defaults:
Heun++ (heunpp2), the improved pseudo-numerical multistep methods iPNDM / iPNDM-v, DEIS, the RES multistep solver
and the gradient-estimation sampler. Same call shape and callbacks as `samplers`; d = (x - x0) / sigma is the ODE slope.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .samplers import (
    Denoiser, NoiseSampler, StepCallback, _call, _denoise, _euler_to, _floats, _global_noise, ancestral_step,
)
from .samplers_cfgpp import denoise_with_uncond


@torch.no_grad()
def sample_heunpp2(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: StepCallback | None = None
) -> torch.Tensor:
    """Heun++ (from the sd-webui-samplers-scheduler collection, as ComfyUI ships it): each step averages the slopes
    at the current point and at Euler look-aheads to the next one or two sigmas, weighted by those sigmas relative
    to the schedule's start; the last step is Euler and the one before it a two-slope (Heun-like) step."""
    s = _floats(sigmas)
    end = s[-1]
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        d = (x - denoised) / s[i]
        dt = s[i + 1] - s[i]
        if s[i + 1] == end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = (x_2 - _call(model, x_2, s[i + 1], extra_args)) / s[i + 1]
        if s[i + 2] == end:
            w2 = s[i + 1] / (2 * s[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
            continue
        x_3 = x_2 + d_2 * (s[i + 2] - s[i + 1])
        d_3 = (x_3 - _call(model, x_3, s[i + 2], extra_args)) / s[i + 2]
        w2, w3 = s[i + 1] / (3 * s[0]), s[i + 2] / (3 * s[0])
        x = x + (d * (1 - w2 - w3) + d_2 * w2 + d_3 * w3) * dt
    return x


# Adams-Bashforth weights for equal steps, newest slope first (orders 1..4).
_AB_WEIGHTS = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def sample_ipndm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    max_order: int = 4,
) -> torch.Tensor:
    """iPNDM (Zhang & Chen 2023, "Fast sampling of diffusion models with exponential integrator"): Adams-Bashforth
    with the fixed equal-step weights, the order ramping up from Euler over the first steps; the step to sigma = 0
    jumps to the prediction."""
    return _adams_bashforth(model, x, sigmas, extra_args, callback, max_order, lambda s, i, order: _AB_WEIGHTS[order])


def _adams_bashforth(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args, callback: StepCallback | None,
                     max_order: int, weights_for: Callable[[list[float], int, int], tuple[float, ...]]) -> torch.Tensor:
    """The iPNDM loop: slope d = (x - x0) / sigma, then x + (weighted newest-first slopes) * step, the weights of
    order min(max_order, i + 1) from `weights_for(sigmas, i, order)`; the step to sigma = 0 jumps to x0."""
    s = _floats(sigmas)
    slopes: list[torch.Tensor] = []  # previous slopes, newest last, at most max_order - 1
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        d = (x - denoised) / s[i]
        if s[i + 1] == 0:
            x_next = denoised
        else:
            weights = weights_for(s, i, min(max_order, i + 1))
            history = [d] + slopes[::-1]
            x_next = x + sum(w * h for w, h in zip(weights, history)) * (s[i + 1] - s[i])
        slopes = (slopes + [d])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x


def _ipndm_v_weights(s: list[float], i: int, order: int) -> tuple[float, ...]:
    """Variable-step Adams-Bashforth weights of iPNDM-v (newest slope first), from the step sizes in sigma."""
    if order == 1:
        return (1.0,)
    h0 = s[i + 1] - s[i]
    h1 = s[i] - s[i - 1]
    c1, c2 = (2 + h0 / h1) / 2, -(h0 / h1) / 2
    if order == 2:
        return (c1, c2)
    h2 = s[i - 1] - s[i - 2]
    a = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return (c1 + a, c2 - (1 + h1 / h2) * a, a * h1 / h2)
    h3 = s[i - 2] - s[i - 3]
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    b = ((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2))) \
        * (h0 * (h0 + h1) * (h0 + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
    return (
        c1 + a + b,
        c2 - (1 + h1 / h2) * a - (1 + h1 / h2 + q) * b,
        a * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * b,
        -b * q * h1 / h2,
    )


@torch.no_grad()
def sample_ipndm_v(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    max_order: int = 4,
) -> torch.Tensor:
    """iPNDM with variable-step weights (iPNDM-v): the Adams-Bashforth weights recomputed from the actual sigma
    steps, so it keeps its order on non-uniform schedules."""
    return _adams_bashforth(model, x, sigmas, extra_args, callback, max_order, _ipndm_v_weights)


def _phi1(t: float) -> float:
    return math.expm1(t) / t


def _phi2(t: float) -> float:
    return (_phi1(t) - 1.0) / t


@torch.no_grad()
def _res_multistep(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    cfg_pp: bool = False,
) -> torch.Tensor:
    """RES multistep (Zhang et al. 2023, "Improved order analysis and design of exponential integrator for
    diffusion models", second-order multistep in lambda = -log sigma), to sigma_down then noise sigma_up when
    ancestral; first step and the jump to 0 are Euler. With cfg_pp the noise part uses the unconditional
    predictions (CFG++)."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    old_denoised: torch.Tensor | None = None
    old_sigma_down = 0.0
    for i in range(len(s) - 1):
        if cfg_pp:
            denoised, uncond = denoise_with_uncond(model, x, s[i], i, extra_args, callback)
        else:
            denoised = uncond = _denoise(model, x, s[i], i, extra_args, callback)
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + (x - uncond) * (sigma_down / s[i])
            else:
                x = _euler_to(x, denoised, s[i], sigma_down)
        else:
            h = math.log(s[i]) - math.log(sigma_down)
            c2 = (math.log(old_sigma_down) - math.log(s[i - 1])) / h  # (t_prev - t_old) / h with t = -log sigma
            p1, p2 = _phi1(-h), _phi2(-h)
            b1, b2 = (p1 - p2 / c2, p2 / c2) if c2 != 0 else (p1, 0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
            x = x * math.exp(-h) + (uncond * b1 + old_denoised * b2) * h
        if s[i + 1] > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * (s_noise * sigma_up)
        old_denoised = uncond
        old_sigma_down = sigma_down
    return x


def sample_res_multistep(model, x, sigmas, *, extra_args=None, callback=None, s_noise=1.0, noise_sampler=None):
    """RES multistep, deterministic."""
    return _res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, eta=0.0, s_noise=s_noise,
                          noise_sampler=noise_sampler)


def sample_res_multistep_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, s_noise=1.0, noise_sampler=None):
    """RES multistep, deterministic, CFG++."""
    return _res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, eta=0.0, s_noise=s_noise,
                          noise_sampler=noise_sampler, cfg_pp=True)


def sample_res_multistep_ancestral(model, x, sigmas, *, extra_args=None, callback=None, eta=1.0, s_noise=1.0,
                                   noise_sampler=None):
    """RES multistep to sigma_down, then fresh noise sigma_up."""
    return _res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, eta=eta, s_noise=s_noise,
                          noise_sampler=noise_sampler)


def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, eta=1.0, s_noise=1.0,
                                          noise_sampler=None):
    """RES multistep ancestral, CFG++."""
    return _res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, eta=eta, s_noise=s_noise,
                          noise_sampler=noise_sampler, cfg_pp=True)


@torch.no_grad()
def sample_gradient_estimation(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    ge_gamma: float = 2.0,
    cfg_pp: bool = False,
) -> torch.Tensor:
    """Gradient estimation (Permenter & Yuan 2024, "Interpreting and improving diffusion models from an
    optimization perspective"): Euler plus a momentum-like correction (ge_gamma - 1) * (d - d_previous) * dt."""
    s = _floats(sigmas)
    old_d: torch.Tensor | None = None
    for i in range(len(s) - 1):
        if cfg_pp:
            denoised, uncond = denoise_with_uncond(model, x, s[i], i, extra_args, callback)
        else:
            denoised = uncond = _denoise(model, x, s[i], i, extra_args, callback)
        d = (x - uncond) / s[i]
        dt = s[i + 1] - s[i]
        if s[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * s[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (d - old_d) * ((ge_gamma - 1) * dt)
        old_d = d
    return x


def sample_gradient_estimation_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, ge_gamma=2.0):
    """Gradient estimation, CFG++."""
    return sample_gradient_estimation(model, x, sigmas, extra_args=extra_args, callback=callback, ge_gamma=ge_gamma,
                                      cfg_pp=True)


# ---------------------------------------------------------------------------------------------------------------
# DEIS


DEIS_INTEGRATION_POINTS = 10_000


def _deis_vp_times(sigmas: list[float], eps_s: float = 1e-3, sigma_min: float = 0.002, sigma_max: float = 80.0):
    """The sigmas as times t of a linear-beta VP SDE fitted to EDM's range [0.002, 80] over t in [eps_s, 1] (the
    fixed range ComfyUI's DEIS uses whatever the model): beta(t) = beta_0 + t (beta_1 - beta_0)."""
    beta_d = 2 * (math.log(sigma_min**2 + 1) / eps_s - math.log(sigma_max**2 + 1)) / (eps_s - 1)
    beta_0 = math.log(sigma_max**2 + 1) - 0.5 * beta_d
    times = [(math.sqrt(beta_0**2 + 2 * beta_d * math.log(s * s + 1)) - beta_0) / beta_d for s in sigmas]
    return times, beta_0, beta_d + beta_0


def deis_coefficients(sigmas: list[float], max_order: int) -> list[list[float]]:
    """DEIS's "tAB" weights (Zhang & Chen 2023): for each step, the integral over [t_i, t_(i+1)] of the
    exponential-integrator kernel -0.5 dlog(alpha)/dt / sqrt(alpha (1 - alpha)) times each Lagrange basis polynomial
    through the last `order` times, by a 10000-point Riemann sum as ComfyUI computes it. The weights multiply the
    ODE slopes in sigma (x_next = x + sum_j w_j d_j)."""
    times, beta_0, beta_1 = _deis_vp_times(sigmas)
    weights: list[list[float]] = []
    for i in range(len(times) - 1):
        order = min(i + 1, max_order)
        if order == 1 or sigmas[i + 1] <= 0:  # the step to sigma = 0 is Euler (the kernel is infinite at t = 0)
            weights.append([])
            continue
        taus = np.linspace(times[i], times[i + 1], DEIS_INTEGRATION_POINTS)
        dtau = (times[i + 1] - times[i]) / DEIS_INTEGRATION_POINTS
        log_alpha = -0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0
        alpha = np.exp(log_alpha)
        kernel = 0.5 * (taus * (beta_1 - beta_0) + beta_0) / np.sqrt(alpha * (1 - alpha))
        nodes = [times[i - k] for k in range(order)]
        row = []
        for j in range(order):
            basis = np.ones_like(taus)
            for k, node in enumerate(nodes):
                if k != j:
                    basis = basis * (taus - node) / (nodes[j] - node)
            row.append(float(np.sum(kernel * basis) * dtau))
        weights.append(row)
    return weights


@torch.no_grad()
def sample_deis(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    max_order: int = 3,
) -> torch.Tensor:
    """DEIS (tAB variant): a multistep exponential integrator whose weights integrate the Lagrange interpolant of
    the previous slopes against the VP kernel; Euler on the first step and on the step to sigma = 0."""
    s = _floats(sigmas)
    weights = deis_coefficients(s, max_order)
    slopes: list[torch.Tensor] = []
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        d = (x - denoised) / s[i]
        order = 1 if s[i + 1] <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + d * (s[i + 1] - s[i])
        else:
            history = [d] + slopes[::-1]
            x_next = x + sum(w * h for w, h in zip(weights[i], history))
        slopes = (slopes + [d])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x
