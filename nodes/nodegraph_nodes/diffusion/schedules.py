"""Noise schedules: the sigma spacings a sampler can walk.

Given a model's sigma table (see `sigma_table.DiscreteModelSampling`, which builds it from the training beta
schedule: DDPM's `linear`, Stable Diffusion's `scaled_linear`, improved DDPM's `cosine`) and a step count, a
spacing gives the sigmas a sampler visits, descending, with a trailing 0. Names and meaning follow ComfyUI's
schedulers, so a workflow picks the same sigmas here as there.

All spacings return float32 CPU tensors of length steps + 1 (`beta` may return fewer when rounding merges steps,
`ddim_uniform` more when the table length is not a multiple of steps).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch


# ---------------------------------------------------------------------------------------------------------------
# Spacings


class SigmaTable(Protocol):
    """What a spacing needs from a model's discrete schedule (implemented by DiscreteModelSampling)."""

    sigmas: torch.Tensor  # ascending, one per training timestep

    @property
    def sigma_min(self) -> float: ...

    @property
    def sigma_max(self) -> float: ...

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor: ...

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor: ...


def _with_zero(sigmas: torch.Tensor | list[float]) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022: evenly spaced in sigma^(1/rho) from sigma_max to sigma_min."""
    ramp = torch.linspace(0, 1, steps)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in log(sigma) from sigma_max to sigma_min."""
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def kl_optimal_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """"Align Your Steps" (Sabour et al. 2024) KL-optimal spacing: evenly spaced in atan(sigma)."""
    w = torch.linspace(0, 1, steps) if steps > 1 else torch.zeros(1)
    return _with_zero(torch.tan(w * math.atan(sigma_min) + (1 - w) * math.atan(sigma_max)))


def polyexponential_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """log(sigma) a polynomial of degree rho in the ramp from 1 to 0 (rho = 1: the exponential spacing)."""
    ramp = torch.linspace(1, 0, steps) ** rho
    return _with_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def laplace_sigmas(steps: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """log(sigma) at the quantiles of a Laplace(mu, beta) distribution (Tiankai et al. 2024), clamped to
    [sigma_min, sigma_max]. No trailing 0 is appended, as in ComfyUI."""
    x = torch.linspace(0, 1, steps)
    lam = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    return torch.clamp(torch.exp(lam), min=sigma_min, max=sigma_max)


def vp_sigmas(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous variance-preserving SDE's sigmas (Song et al. 2021) at t evenly spaced from 1 to eps_s."""
    t = torch.linspace(1, eps_s, steps)
    return _with_zero(torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t)))


# "Align Your Steps" (Sabour et al. 2024) optimised 10-step noise levels, per model kind, from the paper's release.
AYS_NOISE_LEVELS: dict[str, list[float]] = {
    "SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
    "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}


def align_your_steps_sigmas(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """AYS noise levels for `steps` steps (log-linearly interpolated from the 10-step table), the last
    round(steps * denoise) steps kept, the final sigma set to 0."""
    if denoise <= 0:
        return torch.zeros(0)
    total = steps if denoise >= 1.0 else round(steps * denoise)
    levels = np.array(AYS_NOISE_LEVELS[model_type], dtype=np.float64)
    if steps + 1 != len(levels):
        xs = np.linspace(0, 1, len(levels))
        ys = np.interp(np.linspace(0, 1, steps + 1), xs, np.log(levels[::-1]))
        levels = np.exp(ys)[::-1].copy()
    levels = levels[-(total + 1):]
    levels[-1] = 0
    return torch.tensor(levels, dtype=torch.float32)


def normal_sigmas(model: SigmaTable, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from the one of sigma_max to the one of sigma_min (both included), as sigmas."""
    start, end = _timestep_range(model)
    return _with_zero(model.sigma(torch.linspace(start, end, steps)))


def sgm_uniform_sigmas(model: SigmaTable, steps: int) -> torch.Tensor:
    """Like `normal` but over steps + 1 evenly spaced timesteps with the last (sigma_min) dropped, as SGM does."""
    start, end = _timestep_range(model)
    return _with_zero(model.sigma(torch.linspace(start, end, steps + 1)[:-1]))


def _timestep_range(model: SigmaTable) -> tuple[float, float]:
    start = float(model.timestep(torch.tensor(model.sigma_max)))
    end = float(model.timestep(torch.tensor(model.sigma_min)))
    return start, end


def simple_sigmas(model: SigmaTable, steps: int) -> torch.Tensor:
    """Every (T/steps)-th entry of the model's sigma table, from the top: timesteps T-1, T-1-T/steps, ... (truncated).

    For T=1000 and 10 steps this is timesteps 999, 899, ..., 99 (diffusers' "trailing" spacing).
    """
    table = model.sigmas
    stride = len(table) / steps
    return _with_zero([float(table[-(1 + int(i * stride))]) for i in range(steps)])


def ddim_uniform_sigmas(model: SigmaTable, steps: int) -> torch.Tensor:
    """Every (T // steps)-th entry of the sigma table starting at timestep 1, descending (the original DDIM code).

    For T=1000 and 10 steps: timesteps 901, 801, ..., 1 (diffusers' "leading" spacing with steps_offset=1).
    When T is not a multiple of steps this gives more steps than asked (12 -> 13), as ComfyUI's does.
    """
    table = model.sigmas
    stride = max(len(table) // steps, 1)
    return _with_zero([float(table[t]) for t in range(1, len(table), stride)][::-1])


def beta_sigmas(model: SigmaTable, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Timesteps placed at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024, "Beta Sampling is
    All You Need"): dense at both ends of the schedule. Quantiles that round to the same timestep are merged."""
    last = len(model.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(_beta_ppf(quantiles, alpha, beta) * last)
    sigmas, previous = [], None
    for t in timesteps:
        if t != previous:
            sigmas.append(float(model.sigmas[int(t)]))
        previous = t
    return _with_zero(sigmas)


def _beta_ppf(q: np.ndarray, a: float, b: float, grid: int = 200_000) -> np.ndarray:
    """Inverse CDF of Beta(a, b), without scipy.

    With x = sin^2(theta) the density becomes 2 sin^(2a-1) cos^(2b-1) in theta, which is bounded for a, b >= 1/2 and
    integrable otherwise; a midpoint rule on a fine theta grid gives the CDF to ~1e-6, enough to place timesteps.
    """
    edges = np.linspace(0, math.pi / 2, grid + 1)
    mid = (edges[:-1] + edges[1:]) / 2
    density = np.sin(mid) ** (2 * a - 1) * np.cos(mid) ** (2 * b - 1)
    cdf = np.concatenate([[0.0], np.cumsum(density)])
    cdf /= cdf[-1]
    return np.sin(np.interp(q, cdf, edges)) ** 2


def linear_quadratic_sigmas(
    model: SigmaTable, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Movie Gen's schedule (Polyak et al. 2024), as a fraction of sigma_max: the first half of the steps lowers the
    noise linearly to `threshold_noise`, the rest follow a quadratic that reaches 0 with a continuous slope."""
    if steps == 1:
        return torch.tensor([1.0, 0.0]) * model.sigma_max
    n_lin = steps // 2 if linear_steps is None else linear_steps
    n_quad = steps - n_lin
    # Quadratic a*i^2 + b*i + c on [n_lin, steps] that meets the linear part (value and slope) at n_lin and 1 at steps.
    excess = n_lin - threshold_noise * steps
    a = excess / (n_lin * n_quad**2)
    b = threshold_noise / n_lin - 2 * excess / n_quad**2
    c = a * n_lin**2
    progress = [i * threshold_noise / n_lin for i in range(n_lin)]
    progress += [a * i**2 + b * i + c for i in range(n_lin, steps)]
    progress.append(1.0)
    return torch.tensor([1.0 - p for p in progress], dtype=torch.float32) * model.sigma_max


def _table_free(spacing: Callable[[int, float, float], torch.Tensor]) -> Callable[[SigmaTable, int], torch.Tensor]:
    """Adapt a spacing that only needs the sigma range to the (model, steps) signature."""
    return lambda model, steps: spacing(steps, model.sigma_min, model.sigma_max)


SCHEDULERS: dict[str, Callable[[SigmaTable, int], torch.Tensor]] = {
    "simple": simple_sigmas,
    "sgm_uniform": sgm_uniform_sigmas,
    "karras": _table_free(karras_sigmas),
    "exponential": _table_free(exponential_sigmas),
    "ddim_uniform": ddim_uniform_sigmas,
    "beta": beta_sigmas,
    "normal": normal_sigmas,
    "linear_quadratic": linear_quadratic_sigmas,
    "kl_optimal": _table_free(kl_optimal_sigmas),
}


def calculate_sigmas(model: SigmaTable, scheduler: str, steps: int) -> torch.Tensor:
    """The sigmas of the named scheduler for `steps` steps (descending, trailing 0)."""
    try:
        spacing = SCHEDULERS[scheduler]
    except KeyError:
        raise ValueError(f"unknown scheduler {scheduler!r}; known: {list(SCHEDULERS)}") from None
    return spacing(model, steps)
