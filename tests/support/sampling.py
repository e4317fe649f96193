"""Closed-form denoisers for testing samplers without any network (tiny real models are in `support.tiny`).

`gaussian_denoiser()` is the exact denoiser of Gaussian data; `gaussian_ode()` the exact probability-flow ODE
solution it implies.
"""
from __future__ import annotations

import torch


def gaussian_denoiser(mean: float = 0.3, std: float = 0.5):
    """The exact denoiser for data x0 ~ N(mean, std^2) per element: E[x0 | x0 + sigma*n = x].

    The probability-flow ODE then has the closed-form solution
    x(sigma) = mean + (x(sigma0) - mean) * sqrt((std^2 + sigma^2) / (std^2 + sigma0^2)) (see `gaussian_ode`).
    """
    var = std**2

    def denoise(x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        s2 = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) ** 2
        return (x * var + mean * s2) / (var + s2)

    return denoise


def gaussian_ode(x0: torch.Tensor, sigma0: float, sigma: float, mean: float = 0.3, std: float = 0.5) -> torch.Tensor:
    """The exact probability-flow ODE solution for `gaussian_denoiser` from sigma0 to sigma."""
    return mean + (x0 - mean) * ((std**2 + sigma**2) / (std**2 + sigma0**2)) ** 0.5
