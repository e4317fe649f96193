"""DPM-Solver (Lu et al. 2022, arXiv:2206.00927) on the noise prediction, in t = -log sigma: ComfyUI's `dpm_fast`
(fixed steps of orders 3, 3, ..., then 2/1 to use exactly the evaluation budget) and `dpm_adaptive` (embedded
orders 2/3 or 1/2 with a PID step-size controller).

Both run from sigma_max to sigma_min and stop there (they never take the final jump to sigma = 0), as ComfyUI's
do: the schedule's sigmas only give the end points and, for dpm_fast, the number of model evaluations.
"""
from __future__ import annotations

import math

import torch

from .samplers import Denoiser, NoiseSampler, StepCallback, _global_noise, ancestral_step


class _Solver:
    """The DPM-Solver-1/2/3 single steps, with the noise predictions of one step cached by role."""

    def __init__(self, model: Denoiser, extra_args) -> None:
        self.model = model
        self.extra_args = extra_args or {}

    def eps(self, cache: dict, key: str, x: torch.Tensor, t: float) -> torch.Tensor:
        if key not in cache:
            sigma = math.exp(-t)
            denoised = self.model(x, x.new_full((x.shape[0],), sigma), **self.extra_args)
            cache[key] = (x - denoised) / sigma
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        eps = self.eps(cache, "eps", x, t)
        return x - eps * (math.exp(-t_next) * math.expm1(t_next - t))

    def step_2(self, x, t, t_next, cache, r1=0.5):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - eps * (math.exp(-s1) * math.expm1(r1 * h))
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        sigma_next = math.exp(-t_next)
        return x - eps * (sigma_next * math.expm1(h)) - (eps_r1 - eps) * (sigma_next / (2 * r1) * math.expm1(h))

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - eps * (math.exp(-s1) * math.expm1(r1 * h))
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - eps * (math.exp(-s2) * math.expm1(r2 * h))
              - (eps_r1 - eps) * (math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1)))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        sigma_next = math.exp(-t_next)
        return x - eps * (sigma_next * math.expm1(h)) - (eps_r2 - eps) * (sigma_next / r2 * (math.expm1(h) / h - 1))


def _range(sigmas: torch.Tensor) -> tuple[float, float]:
    """(sigma_min, sigma_max) as ComfyUI takes them from a schedule: the last sigma, or the one before a final 0."""
    s = [float(v) for v in sigmas]
    sigma_min = s[-1] if s[-1] > 0 else s[-2]
    return sigma_min, s[0]


def _ancestral_target(t: float, t_next: float, t_end: float, eta: float) -> tuple[float, float]:
    """Where a step with ancestral noise really goes (t_next_, never past t_end) and the noise it then adds."""
    if not eta:
        return t_next, 0.0
    sigma_down, _ = ancestral_step(math.exp(-t), math.exp(-t_next), eta)
    target = min(t_end, -math.log(sigma_down))
    return target, (math.exp(-t_next) ** 2 - math.exp(-target) ** 2) ** 0.5


@torch.no_grad()
def sample_dpm_fast(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver-fast with len(sigmas) - 1 model evaluations, evenly spaced in t from sigmas[0] to sigma_min."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = noise_sampler or _global_noise(x)
    sigma_min, sigma_max = _range(sigmas)
    nfe = len(sigmas) - 1
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    m = nfe // 3 + 1
    ts = [t_start + (t_end - t_start) * k / m for k in range(m + 1)]
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    solver = _Solver(model, extra_args)
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = ts[i], ts[i + 1]
        target, sigma_up = _ancestral_target(t, t_next, t_end, eta)
        eps = solver.eps(cache, "eps", x, t)
        if callback is not None:
            callback(i, x, x - eps * math.exp(-t))
        step = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}[order]
        x = step(x, t, target, cache)
        if sigma_up:
            x = x + noise_sampler(math.exp(-t), math.exp(-t_next)) * (sigma_up * s_noise)
    return x


@torch.no_grad()
def sample_dpm_adaptive(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver-12 / -23 with adaptive steps from sigmas[0] to sigma_min: each step computes an order-(k-1) and an
    order-k solution, their scaled difference is the error, and a PID controller on that error grows or shrinks the
    step (rejecting it when the proposed factor falls below accept_safety)."""
    if len(sigmas) <= 1:
        return x
    if order not in (2, 3):
        raise ValueError(f"dpm_adaptive's order must be 2 or 3, not {order}")
    noise_sampler = noise_sampler or _global_noise(x)
    sigma_min, sigma_max = _range(sigmas)
    s, t_end = -math.log(sigma_max), -math.log(sigma_min)
    controller = _PID(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    solver = _Solver(model, extra_args)
    x_prev = x
    steps = 0
    while s < t_end - 1e-5:
        cache: dict = {}
        t = min(t_end, s + controller.h)
        target, sigma_up = _ancestral_target(s, t, t_end, eta)
        eps = solver.eps(cache, "eps", x, s)
        denoised = x - eps * math.exp(-s)
        if order == 2:
            x_low = solver.step_1(x, s, target, cache)
            x_high = solver.step_2(x, s, target, cache)
        else:
            x_low = solver.step_2(x, s, target, cache, r1=1 / 3)
            x_high = solver.step_3(x, s, target, cache)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        error = float(torch.linalg.norm((x_low - x_high) / delta)) / x.numel() ** 0.5
        if controller.propose(error):
            x_prev = x_low
            x = x_high
            if sigma_up:
                x = x + noise_sampler(math.exp(-s), math.exp(-t)) * (sigma_up * s_noise)
            s = t
        if callback is not None:
            callback(steps, x, denoised)
        steps += 1
    return x


class _PID:
    """A PID controller of the step size on the inverse error (Söderlind's digital filters), with an arctan limiter."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float,
                 eps: float = 1e-8) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.history: list[float] = []

    def propose(self, error: float) -> bool:
        inverse = 1 / (error + self.eps)
        if not self.history:
            self.history = [inverse] * 3
        self.history[0] = inverse
        factor = self.history[0] ** self.b1 * self.history[1] ** self.b2 * self.history[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.history[2], self.history[1] = self.history[1], self.history[0]
        self.h *= factor
        return accept
