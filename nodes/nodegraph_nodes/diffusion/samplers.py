"""Samplers: small pure functions that walk a denoiser down a sigma schedule.

Every sampler has the k-diffusion shape `sample_<name>(model, x, sigmas, *, extra_args=None, callback=None, ...)`:

* `model(x, sigma, **extra_args) -> denoised`: a denoiser in variance-exploding form (x = x0 + sigma * noise),
  `sigma` a [B] tensor (see denoiser.CFGDenoiser);
* `x`: the starting point, already noised to sigmas[0]; `sigmas`: descending, usually ending in 0;
* `callback(i, x, denoised)`: called once per step, after the step's first model evaluation, with x before the
  update. An exception raised there propagates and stops sampling (that is how interrupts work);
* stochastic samplers take `eta`, `s_noise` and `noise_sampler(sigma, sigma_next) -> unit Gaussian noise like x`.

Step scalars are computed as Python floats from the (CPU) sigma list, so a GPU run needs no host sync per step.
The algorithms follow the papers named on each function; ComfyUI's names and defaults are kept so that a workflow
means the same thing here.

Noise: ancestral samplers draw independent Gaussians from a CPU generator seeded with the prompt seed (ComfyUI's
draw on a CPU run; a seed gives the same image on any device). SDE samplers draw increments of one Brownian motion
from torchsde's BrownianTree seeded with the prompt seed, exactly as ComfyUI does, so noise over overlapping
intervals is correlated as the SDE solvers assume and a seed gives ComfyUI's image.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Denoiser = Callable[..., torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
NoiseSampler = Callable[[float, float], torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------
# Noise


class GaussianNoiseSampler:
    """Independent unit Gaussian noise shaped like `like` at each call, drawn on the CPU from a seeded generator."""

    def __init__(self, like: torch.Tensor, seed: int) -> None:
        self._generator = torch.Generator().manual_seed(seed)
        self._shape, self._device, self._dtype = like.shape, like.device, like.dtype

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        noise = torch.randn(self._shape, generator=self._generator, dtype=torch.float32)
        return noise.to(self._device, self._dtype)


class BrownianTreeNoiseSampler:
    """Normalised increments (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) of one Brownian motion W over
    [sigma_min, sigma_max], from torchsde's BrownianTree seeded with the prompt seed: k-diffusion's
    BrownianTreeNoiseSampler, which ComfyUI's SDE samplers use, so a seed gives ComfyUI's noise.

    Increments over overlapping intervals are correlated as the SDE solvers assume (dpmpp_sde queries the midpoint).
    `cpu=True` keeps the tree on the CPU (ComfyUI's dpmpp_*_sde); `cpu=False` builds it on x's device (their `_gpu`
    names), where it draws from that device's generator. Query times are float32 tensors, as in ComfyUI, so a
    sigma computed in float32 there is the same query here.
    """

    def __init__(self, like: torch.Tensor, seed: int, sigma_min: float, sigma_max: float, *, cpu: bool = True) -> None:
        import torchsde  # a dependency; imported here so that importing the samplers stays light

        # torchsde compares query times with its float32 interval ends in float64 and warns when a query equal to
        # an end in float32 lands a rounding error outside; the value it returns is the end's. Not the user's concern.
        warnings.filterwarnings("ignore", message=r"Should have (ta>=t0|tb<=t1)", category=UserWarning)

        self._device, self._dtype, self._cpu = like.device, like.dtype, cpu
        where = torch.device("cpu") if cpu else like.device
        t0 = torch.as_tensor(float(min(sigma_min, sigma_max)), dtype=torch.float32, device=where)
        t1 = torch.as_tensor(float(max(sigma_min, sigma_max)), dtype=torch.float32, device=where)
        w0 = torch.zeros(like.shape, dtype=like.dtype, device=where)
        self._where = where
        self._tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    @classmethod
    def over(cls, like: torch.Tensor, sigmas: torch.Tensor, seed: int, *, cpu: bool = True) -> "BrownianTreeNoiseSampler":
        """ComfyUI's interval: the smallest non-zero sigma to the largest."""
        positive = sigmas[sigmas > 0]
        return cls(like, seed, float(positive.min()), float(sigmas.max()), cpu=cpu)

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        t0 = torch.as_tensor(sigma, dtype=torch.float32, device=self._where)
        t1 = torch.as_tensor(sigma_next, dtype=torch.float32, device=self._where)
        low, high, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        w = self._tree(low, high) * sign
        return (w / (t1 - t0).abs().sqrt()).to(self._device, self._dtype)


def _global_noise(x: torch.Tensor) -> NoiseSampler:
    """Fallback when no noise sampler is given: torch's global RNG (callers that need reproducibility pass one)."""
    return lambda sigma, sigma_next: torch.randn_like(x)


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _floats(sigmas: torch.Tensor) -> list[float]:
    return [float(s) for s in sigmas.detach().cpu()]


def _call(model: Denoiser, x: torch.Tensor, sigma: float, extra_args: dict[str, Any] | None) -> torch.Tensor:
    return model(x, x.new_full((x.shape[0],), sigma), **(extra_args or {}))


def _denoise(model: Denoiser, x: torch.Tensor, sigma: float, i: int, extra_args: dict[str, Any] | None,
             callback: StepCallback | None) -> torch.Tensor:
    """Step i's first model evaluation, reported to the callback (with x before the update)."""
    denoised = _call(model, x, sigma, extra_args)
    if callback is not None:
        callback(i, x, denoised)
    return denoised


def _lambda_point(sigma: float, sigma_next: float, r: float) -> float:
    """The sigma a fraction r of the way from sigma to sigma_next in lambda = -log sigma, computed in float32 tensor
    arithmetic as ComfyUI does: the Brownian tree is then queried at bit-identical times."""
    lam = -torch.tensor(sigma, dtype=torch.float32).log()
    lam_next = -torch.tensor(sigma_next, dtype=torch.float32).log()
    return float((-(lam + r * (lam_next - lam))).exp())


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step sigma -> sigma_next into a deterministic step to sigma_down plus fresh noise of size sigma_up,
    with sigma_down^2 + sigma_up^2 = sigma_next^2; eta = 1 is DDPM-like ancestral sampling, eta = 0 deterministic."""
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


def _euler_to(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_to: float) -> torch.Tensor:
    """One Euler step of the probability-flow ODE dx/dsigma = (x - denoised) / sigma."""
    return x + (x - denoised) * ((sigma_to - sigma) / sigma)


# ---------------------------------------------------------------------------------------------------------------
# ODE samplers


@torch.no_grad()
def sample_euler(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: StepCallback | None = None
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 1). Also ComfyUI's `ddim`: DDIM with
    eta = 0 is exactly this step in sigma space."""
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        x = _euler_to(x, denoised, s[i], s[i + 1])
    return x


@torch.no_grad()
def sample_heun(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: StepCallback | None = None
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Alg. 1); the last step to sigma = 0 is plain Euler."""
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        d = (x - denoised) / s[i]
        x_next = x + d * (s[i + 1] - s[i])
        if s[i + 1] > 0:
            denoised_next = _call(model, x_next, s[i + 1], extra_args)
            d_next = (x_next - denoised_next) / s[i + 1]
            x_next = x + (d + d_next) * ((s[i + 1] - s[i]) / 2)
        x = x_next
    return x


def _dpm2_step(model, x, denoised, sigma, sigma_to, extra_args) -> torch.Tensor:
    """DPM-Solver-2 step sigma -> sigma_to: the slope is taken at the log-space midpoint (Euler when sigma_to = 0)."""
    if sigma_to == 0:
        return _euler_to(x, denoised, sigma, sigma_to)
    sigma_mid = math.exp((math.log(sigma) + math.log(sigma_to)) / 2)
    x_mid = _euler_to(x, denoised, sigma, sigma_mid)
    denoised_mid = _call(model, x_mid, sigma_mid, extra_args)
    return x + (x_mid - denoised_mid) * ((sigma_to - sigma) / sigma_mid)


@torch.no_grad()
def sample_dpm_2(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: StepCallback | None = None
) -> torch.Tensor:
    """DPM-Solver-2 (Lu et al. 2022) in the Karras et al. formulation: a midpoint method in log sigma."""
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        x = _dpm2_step(model, x, denoised, s[i], s[i + 1], extra_args)
    return x


@torch.no_grad()
def sample_lms(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth in sigma): the slope is extrapolated from the last `order` slopes by
    integrating their Lagrange interpolating polynomial over the step."""
    s = _floats(sigmas)
    slopes: list[torch.Tensor] = []
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        slopes.append((x - denoised) / s[i])
        del slopes[:-order]
        n = len(slopes)
        for j, slope in enumerate(reversed(slopes)):
            x = x + slope * _lms_coefficient(s, i, j, n)
    return x


def _lms_coefficient(sigmas: list[float], i: int, j: int, order: int) -> float:
    """Integral over [sigmas[i], sigmas[i+1]] of the Lagrange basis polynomial of node i-j among nodes i..i-order+1."""
    basis = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k != j:
            basis *= np.polynomial.Polynomial([-sigmas[i - k], 1.0]) / (sigmas[i - j] - sigmas[i - k])
    integral = basis.integ()
    return float(integral(sigmas[i + 1]) - integral(sigmas[i]))


@torch.no_grad()
def sample_dpmpp_2m(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args=None, callback: StepCallback | None = None
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b): second-order multistep in lambda = -log sigma on the data prediction,
    first-order (DDIM) on the first step and the final step to sigma = 0."""
    s = _floats(sigmas)
    previous: torch.Tensor | None = None
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            target = denoised
            if previous is not None:
                half_r = h / (math.log(s[i - 1]) - math.log(s[i])) / 2  # 1 / (2r), r = h_last / h
                target = denoised * (1 + half_r) - previous * half_r
            x = x * (s[i + 1] / s[i]) - target * math.expm1(-h)
        previous = denoised
    return x


# ---------------------------------------------------------------------------------------------------------------
# Ancestral and SDE samplers


@torch.no_grad()
def sample_euler_ancestral(
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
    """Euler to sigma_down, then fresh noise of size sigma_up (see ancestral_step)."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        x = _euler_to(x, denoised, s[i], sigma_down)
        if s[i + 1] > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
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
    """DPM-Solver-2 to sigma_down, then fresh noise of size sigma_up."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        x = _dpm2_step(model, x, denoised, s[i], sigma_down, extra_args)
        if sigma_down > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
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
    """DPM-Solver++(2S), single-step second order with the midpoint in lambda, to sigma_down; then noise sigma_up."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        if sigma_down == 0:
            x = _euler_to(x, denoised, s[i], 0.0)
        else:
            sigma_mid = (s[i] * sigma_down) ** 0.5  # lambda midpoint
            x_mid = x * (sigma_mid / s[i]) - denoised * math.expm1(math.log(sigma_mid / s[i]))
            denoised_mid = _call(model, x_mid, sigma_mid, extra_args)
            x = x * (sigma_down / s[i]) - denoised_mid * math.expm1(math.log(sigma_down / s[i]))
        if s[i + 1] > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    r: float = 0.5,
) -> torch.Tensor:
    """DPM-Solver++ SDE, second order single step: an ancestral DPM-Solver++(1) step to the intermediate point
    lambda + r*h, a model call there, then an ancestral step over the whole interval with the blended prediction."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        if s[i + 1] == 0:
            x = _euler_to(x, denoised, s[i], 0.0)
            continue
        sigma, sigma_next = s[i], s[i + 1]
        sigma_mid = _lambda_point(sigma, sigma_next, r)
        # Step 1: to the intermediate point, with its share of fresh noise.
        down, up = ancestral_step(sigma, sigma_mid, eta)
        x_mid = x * (down / sigma) - denoised * math.expm1(math.log(down / sigma))
        x_mid = x_mid + noise_sampler(sigma, sigma_mid) * (s_noise * up)
        denoised_mid = _call(model, x_mid, sigma_mid, extra_args)
        # Step 2: over the whole interval with the first-order-corrected prediction.
        fac = 1 / (2 * r)
        blended = denoised * (1 - fac) + denoised_mid * fac
        down, up = ancestral_step(sigma, sigma_next, eta)
        x = x * (down / sigma) - blended * math.expm1(math.log(down / sigma))
        x = x + noise_sampler(sigma, sigma_next) * (s_noise * up)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    solver_type: str = "midpoint",
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the 2M multistep update on the SDE whose noise share is set by eta, with the second-order
    correction in its "midpoint" or "heun" form."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', not {solver_type!r}")
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    previous: torch.Tensor | None = None
    h_last = 0.0
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            eta_h = eta * h
            phi = -math.expm1(-h - eta_h)
            x = x * (s[i + 1] / s[i] * math.exp(-eta_h)) + denoised * phi
            if previous is not None:
                scale = (phi / (-h - eta_h) + 1) if solver_type == "heun" else 0.5 * phi
                x = x + (denoised - previous) * (scale * h / h_last)
            if eta:
                x = x + noise_sampler(s[i], s[i + 1]) * (s[i + 1] * (-math.expm1(-2 * eta_h)) ** 0.5 * s_noise)
            h_last = h
        previous = denoised
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
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
    """DPM-Solver++(3M) SDE: third-order multistep from the last three predictions (lower order while history is
    short)."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    history: list[tuple[torch.Tensor, float]] = []  # (denoised, h) of the previous steps, newest first
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        if s[i + 1] == 0:
            x = denoised
            continue
        h = math.log(s[i]) - math.log(s[i + 1])
        h_eta = h * (eta + 1)
        x = x * math.exp(-h_eta) - denoised * math.expm1(-h_eta)
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if len(history) >= 2:
            (d1, h1), (d2, h2) = history[0], history[1]
            r0, r1 = h1 / h, h2 / h
            slope0 = (denoised - d1) / r0
            slope1 = (d1 - d2) / r1
            first = slope0 + (slope0 - slope1) * (r0 / (r0 + r1))
            second = (slope0 - slope1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + first * phi_2 - second * phi_3
        elif history:
            d1, h1 = history[0]
            x = x + (denoised - d1) * (phi_2 * h / h1)
        if eta:
            x = x + noise_sampler(s[i], s[i + 1]) * (s[i + 1] * (-math.expm1(-2 * h * eta)) ** 0.5 * s_noise)
        history = [(denoised, h)] + history[:1]
    return x


@torch.no_grad()
def sample_ddpm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """The ancestral step of DDPM (Ho et al. 2020) between the schedule's points: x_{t-1} drawn from the posterior
    q(x_{t-1} | x_t, x0) with the predicted x0 (mean from eq. 7, variance beta tilde). Computed in the DDPM
    (variance-preserving) scale, where alpha_bar = 1 / (1 + sigma^2), and mapped back to sigma form."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        sigma, sigma_next = s[i], s[i + 1]
        abar, abar_next = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        alpha = abar / abar_next
        beta = 1 - alpha
        x_vp = x * abar**0.5
        mean = denoised * (abar_next**0.5 * beta / (1 - abar)) + x_vp * (alpha**0.5 * (1 - abar_next) / (1 - abar))
        if sigma_next > 0:
            std = (beta * (1 - abar_next) / (1 - abar)) ** 0.5
            x = (mean + noise_sampler(sigma, sigma_next) * std) / abar_next**0.5
        else:
            x = mean
    return x


@torch.no_grad()
def sample_lcm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Latent Consistency Model sampling (Luo et al. 2023): jump to the prediction, then re-noise to the next sigma."""
    noise_sampler = noise_sampler or _global_noise(x)
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        x = denoised
        if s[i + 1] > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * s[i + 1]
    return x


# ---------------------------------------------------------------------------------------------------------------
# UniPC


UNIPC_FINAL_SIGMA = 0.001  # UniPC's update is undefined at sigma = 0 (lambda = inf); it stops here, as ComfyUI does


@torch.no_grad()
def sample_uni_pc(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    order: int = 3,
    variant: str = "bh1",
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023), multistep predictor-corrector on the data prediction, in lambda = -log sigma.

    Each step predicts with UniP-k from the stored predictions, evaluates the model there, and corrects with UniC
    using that evaluation, which then serves as the next step's history (one model call per step). The order ramps
    up over the first steps and down over the last ones. `variant` picks B(h): "bh1" = h, "bh2" = e^h - 1.
    A trailing sigma of 0 is replaced by UNIPC_FINAL_SIGMA.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', not {variant!r}")
    s = _floats(sigmas)
    if s[-1] == 0:
        s[-1] = UNIPC_FINAL_SIGMA
    steps = len(s) - 1
    order = max(1, min(order, steps - 1))
    lambdas = [-math.log(v) for v in s]

    predictions = [_call(model, x, s[0], extra_args)]  # newest last, at most `order` kept
    if callback is not None:
        callback(0, x, predictions[0])
    for step in range(1, steps + 1):
        step_order = min(step, order, steps + 1 - step)
        last = step == steps
        x, predicted = _unipc_update(
            model, x, predictions, lambdas[step - step_order : step], s[step - 1], s[step], lambdas[step],
            step_order, variant, use_corrector=not last, extra_args=extra_args,
        )
        if last:
            break
        predictions = (predictions + [predicted])[-order:]
        if callback is not None:
            callback(step, x, predicted)
    return x


def _unipc_update(
    model: Denoiser,
    x: torch.Tensor,
    predictions: list[torch.Tensor],
    lambdas_prev: list[float],
    sigma_prev: float,
    sigma: float,
    lam: float,
    order: int,
    variant: str,
    *,
    use_corrector: bool,
    extra_args: dict[str, Any] | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One UniPC step of the given order from sigma_prev to sigma. Returns the new x and, when corrected, the model's
    prediction at the new point (the next step's history)."""
    m0, lam0 = predictions[-1], lambdas_prev[-1]
    h = lam - lam0
    # Differences to older predictions, scaled by their lambda offsets r_k (in units of h).
    rks, diffs = [], []
    for k in range(1, order):
        rk = (lambdas_prev[-(k + 1)] - lam0) / h
        rks.append(rk)
        diffs.append((predictions[-(k + 1)] - m0) / rk)
    rks.append(1.0)

    hh = -h  # data prediction integrates e^{-h}
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    # b_i = h phi_{i+1}(h) * i! / B(h), from the recursion phi_{k+1} = (phi_k - 1/k!) / h.
    b, h_phi_k, factorial = [], h_phi_1 / hh - 1, 1
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R = np.array([[rk ** (i - 1) for rk in rks] for i in range(1, order + 1)])

    x_base = x * (sigma / sigma_prev) - m0 * h_phi_1
    x_next = x_base
    if diffs:
        rhos_p = [0.5] if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
        x_next = x_base - sum(d * (b_h * rho) for d, rho in zip(diffs, rhos_p))
    if not use_corrector:
        return x_next, None

    predicted = _call(model, x_next, sigma, extra_args)
    rhos_c = [0.5] if order == 1 else np.linalg.solve(R, b).tolist()
    correction = (predicted - m0) * rhos_c[-1]
    for d, rho in zip(diffs, rhos_c[:-1]):
        correction = correction + d * rho
    return x_base - correction * b_h, predicted


def sample_uni_pc_bh2(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, **kwargs) -> torch.Tensor:
    """UniPC with B(h) = e^h - 1 (the variant diffusers uses by default)."""
    return sample_uni_pc(model, x, sigmas, variant="bh2", **kwargs)
