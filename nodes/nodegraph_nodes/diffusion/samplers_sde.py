"""Stochastic solvers beyond DPM-Solver++: ER-SDE (extended reverse-time SDE), SEEDS-2 / SEEDS-3 and SA-Solver, with
ComfyUI's names and defaults. Same call shape and callbacks as `samplers`; noise comes from `noise_sampler(sigma, sigma_next)`
(independent unit Gaussians in ComfyUI's default, drawn from the prompt seed).

Written for the variance-exploding parametrisation these models use, where lambda (half log-SNR) = -log sigma and
alpha = 1.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from .samplers import Denoiser, NoiseSampler, StepCallback, _call, _denoise, _floats, _global_noise

ER_SDE_INTEGRATION_POINTS = 200


def er_sde_noise_scaler(x: np.ndarray | float) -> np.ndarray | float:
    """ER-SDE's default noise scale function (the paper's ER-SDE-Solver choice): x * (e^(x^0.3) + 10)."""
    return x * (np.exp(np.power(x, 0.3)) + 10.0)


@torch.no_grad()
def sample_er_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    noise_scaler: Callable | None = None,
    max_stage: int = 3,
) -> torch.Tensor:
    """ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDE for diffusion
    models"): the exact linear part of the ER SDE with noise scale function `noise_scaler`, plus first and second
    finite-difference corrections of the prediction (stages 2 and 3, their integrals by a 200-point Riemann sum)."""
    noise_sampler = noise_sampler or _global_noise(x)
    scaler = noise_scaler or er_sde_noise_scaler
    lambdas = _floats(sigmas)  # sigma / alpha, with alpha = 1
    old_denoised: torch.Tensor | None = None
    old_denoised_d: torch.Tensor | None = None
    points = np.arange(ER_SDE_INTEGRATION_POINTS, dtype=np.float64)
    for i in range(len(lambdas) - 1):
        denoised = _denoise(model, x, lambdas[i], i, extra_args, callback)
        stage = min(max_stage, i + 1)
        if lambdas[i + 1] == 0:
            x = denoised
        else:
            ls, lt = lambdas[i], lambdas[i + 1]
            r = float(scaler(lt) / scaler(ls))
            x = x * r + denoised * (1 - r)
            if stage >= 2:
                dt = lt - ls
                step = -dt / ER_SDE_INTEGRATION_POINTS
                positions = lt + points * step
                scaled = scaler(positions)
                integral = float(np.sum(1 / scaled) * step)
                denoised_d = (denoised - old_denoised) / (ls - lambdas[i - 1])
                x = x + denoised_d * (dt + integral * float(scaler(lt)))
                if stage >= 3:
                    integral_u = float(np.sum((positions - ls) / scaled) * step)
                    denoised_u = (denoised_d - old_denoised_d) / ((ls - lambdas[i - 2]) / 2)
                    x = x + denoised_u * (dt**2 / 2 + integral_u * float(scaler(lt)))
                old_denoised_d = denoised_d
            if s_noise > 0:
                variance = lt**2 - ls**2 * r**2
                if variance > 0:  # a noise scale that grows faster than lambda leaves none to add
                    x = x + noise_sampler(ls, lt) * (s_noise * math.sqrt(variance))
        old_denoised = denoised
    return x


def _h_phi_1(h: float) -> float:
    return math.expm1(h)


def _h_phi_2(h: float) -> float:
    return (math.expm1(h) - h) / h


def _seeds_first_stage(model: Denoiser, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_1: float,
                       r: float, h: float, eta: float, s_noise: float, noise_sampler: NoiseSampler | None,
                       extra_args) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SEEDS' first stage, exponential Euler-Maruyama from sigma to sigma_1 = lambda + r*h, and the model there:
    (its prediction, the stage's unit noise or None when no noise is injected)."""
    h_eta = h * (eta + 1)
    x_2 = x * (sigma_1 / sigma * math.exp(-r * h * eta)) - denoised * _h_phi_1(-r * h_eta)
    noise = None
    if noise_sampler is not None:
        noise = noise_sampler(sigma, sigma_1) * math.sqrt(-math.expm1(-2 * r * h * eta))
        x_2 = x_2 + noise * (sigma_1 * s_noise)
    return _call(model, x_2, sigma_1, extra_args), noise


def _chained_noise(noise: torch.Tensor, noise_sampler: NoiseSampler, sigma: float, sigma_next: float,
                   segment: float) -> torch.Tensor:
    """The next segment's noise on the same Brownian path: the previous one decayed by e^segment (segment <= 0)
    plus fresh noise for the rest of the unit variance."""
    return noise * math.exp(segment) + noise_sampler(sigma, sigma_next) * math.sqrt(-math.expm1(2 * segment))


@torch.no_grad()
def sample_seeds_2(
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
    """SEEDS-2 (Gonzalez et al. 2023, "SEEDS: Exponential SDE solvers for fast high-quality sampling from diffusion
    models"), data prediction: an exponential Euler-Maruyama stage to lambda + r*h, a model call there, and the full
    step with the first-order-corrected prediction; the noise of the two segments is chained so that it is one
    Brownian path."""
    noise_sampler = noise_sampler or _global_noise(x)
    inject = eta > 0 and s_noise > 0
    s = _floats(sigmas)
    fac = 1 / (2 * r)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        if s[i + 1] == 0:
            x = denoised
            continue
        h = math.log(s[i]) - math.log(s[i + 1])
        h_eta = h * (eta + 1)
        sigma_1 = math.exp(-(-math.log(s[i]) + r * h))
        denoised_2, noise = _seeds_first_stage(model, x, denoised, s[i], sigma_1, r, h, eta, s_noise,
                                               noise_sampler if inject else None, extra_args)
        blended = denoised + (denoised_2 - denoised) * fac
        x = x * (s[i + 1] / s[i] * math.exp(-h * eta)) - blended * _h_phi_1(-h_eta)
        if inject:
            noise = _chained_noise(noise, noise_sampler, sigma_1, s[i + 1], (r - 1) * h * eta)
            x = x + noise * (s[i + 1] * s_noise)
    return x


@torch.no_grad()
def sample_seeds_3(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    r_1: float = 1.0 / 3,
    r_2: float = 2.0 / 3,
) -> torch.Tensor:
    """SEEDS-3: three stages at lambda + r_1*h, lambda + r_2*h and lambda + h, the later ones using phi_2 weighted
    differences of the earlier predictions; chained noise as in SEEDS-2."""
    noise_sampler = noise_sampler or _global_noise(x)
    inject = eta > 0 and s_noise > 0
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(model, x, s[i], i, extra_args, callback)
        if s[i + 1] == 0:
            x = denoised
            continue
        lam = -math.log(s[i])
        h = math.log(s[i]) - math.log(s[i + 1])
        h_eta = h * (eta + 1)
        sigma_1, sigma_2 = math.exp(-(lam + r_1 * h)), math.exp(-(lam + r_2 * h))

        denoised_2, noise = _seeds_first_stage(model, x, denoised, s[i], sigma_1, r_1, h, eta, s_noise,
                                               noise_sampler if inject else None, extra_args)

        a32 = r_2 / r_1 * _h_phi_2(-r_2 * h_eta)
        a31 = _h_phi_1(-r_2 * h_eta) - a32
        x_3 = x * (sigma_2 / s[i] * math.exp(-r_2 * h * eta)) - (denoised * a31 + denoised_2 * a32)
        if inject:
            noise = _chained_noise(noise, noise_sampler, sigma_1, sigma_2, (r_1 - r_2) * h * eta)
            x_3 = x_3 + noise * (sigma_2 * s_noise)
        denoised_3 = _call(model, x_3, sigma_2, extra_args)

        b3 = _h_phi_2(-h_eta) / r_2
        b1 = _h_phi_1(-h_eta) - b3
        x = x * (s[i + 1] / s[i] * math.exp(-h * eta)) - (denoised * b1 + denoised_3 * b3)
        if inject:
            noise = _chained_noise(noise, noise_sampler, sigma_2, s[i + 1], (r_2 - 1) * h * eta)
            x = x + noise * (s[i + 1] * s_noise)
    return x


def reverse_time_sde_noise_scaler(x: np.ndarray | float, eta: float) -> np.ndarray | float:
    """The reverse-time SDE's noise scale function lambda^(eta + 1) (eta = 0: the probability-flow ODE)."""
    return np.power(x, eta + 1)


# ---------------------------------------------------------------------------------------------------------------
# SA-Solver


def sa_solver_tau(start_sigma: float, end_sigma: float, eta: float = 1.0) -> Callable[[float], float]:
    """SA-Solver's stochasticity: eta while start_sigma >= sigma >= end_sigma, else 0 (the ODE)."""
    return partial(_interval_tau, start_sigma, end_sigma, eta)


def _interval_tau(start_sigma: float, end_sigma: float, eta: float, sigma: float) -> float:
    if eta <= 0:
        return 0.0
    return eta if start_sigma >= float(sigma) >= end_sigma else 0.0


def _exponential_moments(s: float, t: float, order: int, tau: float) -> np.ndarray:
    """(1 + tau^2) * integral_s^t e^((1 + tau^2) x) x^p dx / e^((1 + tau^2) t) for p < order, by repeated
    integration by parts."""
    k = 1 + tau**2
    h = t - s
    ends = np.array([t**p - s**p * math.exp(-k * h) for p in range(order)])
    moments = np.zeros(order)
    for p in range(order):
        for q in range(p + 1):  # p! / q! * (-1/k)^(p-q)
            moments[p] += math.factorial(p) / math.factorial(q) * (-1 / k) ** (p - q) * ends[q]
    return moments


def sa_solver_coefficients(sigma_next: float, lambdas: list[float], lambda_s: float, lambda_t: float, tau: float,
                           simple_order_2: bool = False, corrector: bool = False) -> np.ndarray:
    """SA-Solver's b_i (eqs. 15 and 18 of Xue et al. 2023) for the predictions at `lambdas` (lambda = -log sigma):
    integrals over [lambda_s, lambda_t] of the exponentially weighted Lagrange basis, times alpha_t = 1. The
    "simple order 2" variant uses the paper's appendix D closed forms."""
    k = 1 + tau**2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * math.exp(lambda_t)
    if simple_order_2 and len(lambdas) == 2:
        if corrector:
            b_1 = alpha_t * (0.5 * k * h)
            b_2 = alpha_t * -math.expm1(-h * k) - b_1
        else:
            b_2 = alpha_t * (0.5 * k * h**2) / (lambdas[-2] - lambda_s)
            b_1 = alpha_t * -math.expm1(-h * k) - b_2
        return np.array([b_2, b_1])
    n = len(lambdas)
    vandermonde_t = np.array([[lam**p for lam in lambdas] for p in range(n)])
    return alpha_t * np.linalg.solve(vandermonde_t, _exponential_moments(lambda_s, lambda_t, n, tau))


@torch.no_grad()
def sample_sa_solver(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args=None,
    callback: StepCallback | None = None,
    tau_func: Callable[[float], float] | None = None,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    predictor_order: int = 3,
    corrector_order: int = 4,
    use_pece: bool = False,
    simple_order_2: bool = False,
) -> torch.Tensor:
    """SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams solver for fast sampling of diffusion models"):
    a stochastic Adams predictor (order up to 3) and corrector (up to 4) on the data prediction in lambda, with
    noise of strength tau(sigma). The default tau is 1 between 20% and 80% of the model's schedule (the denoiser's
    `model_sampling`), 0 elsewhere; orders drop near a final sigma of 0. `use_pece` evaluates the corrected state
    again (one more model call per step)."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = noise_sampler or _global_noise(x)
    if tau_func is None:
        sampling = getattr(model, "model_sampling", None)
        if sampling is None:
            raise ValueError("sa_solver needs tau_func, or a denoiser with model_sampling for its default")
        tau_func = sa_solver_tau(sampling.percent_to_sigma(0.2), sampling.percent_to_sigma(0.8))
    s = _floats(sigmas)
    lambdas = [-math.log(v) if v > 0 else math.inf for v in s]
    max_order = max(predictor_order, corrector_order)
    lower_to_end = s[-1] == 0
    x_pred, h, tau, noise = x, 0.0, 0.0, None
    predictions: list[torch.Tensor] = []
    for i in range(len(s) - 1):
        denoised = _denoise(model, x_pred, s[i], i, extra_args, callback)
        predictions = (predictions + [denoised])[-max_order:]
        p_order = min(predictor_order, len(predictions))
        c_order = 0 if i == 0 or (s[i + 1] == 0 and not use_pece) else min(corrector_order, len(predictions))
        if lower_to_end:
            p_order = min(p_order, len(s) - 2 - i)
            c_order = min(c_order, len(s) - 1 - i)

        if c_order == 0:
            x = x_pred
        else:
            b = sa_solver_coefficients(s[i], lambdas[i - c_order + 1 : i + 1], lambdas[i - 1], lambdas[i], tau,
                                       simple_order_2, corrector=True)
            correction = sum(float(w) * p for w, p in zip(b, predictions[-c_order:]))
            x = x * (s[i] / s[i - 1] * math.exp(-(tau**2) * h)) + correction
            if tau > 0 and s_noise > 0:
                x = x + noise  # the previous predictor step's noise
            if use_pece:
                denoised = _call(model, x, s[i], extra_args)
                predictions[-1] = denoised

        if s[i + 1] == 0:
            x_pred = denoised
            continue
        tau = tau_func(s[i + 1])
        b = sa_solver_coefficients(s[i + 1], lambdas[i - p_order + 1 : i + 1], lambdas[i], lambdas[i + 1], tau,
                                   simple_order_2, corrector=False)
        prediction = sum(float(w) * p for w, p in zip(b, predictions[-p_order:]))
        h = lambdas[i + 1] - lambdas[i]
        x_pred = x * (s[i + 1] / s[i] * math.exp(-(tau**2) * h)) + prediction
        if tau > 0 and s_noise > 0:
            noise = noise_sampler(s[i], s[i + 1]) * (s[i + 1] * math.sqrt(-math.expm1(-2 * tau**2 * h)) * s_noise)
            x_pred = x_pred + noise
    return x_pred


def sample_sa_solver_pece(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, **kwargs) -> torch.Tensor:
    """SA-Solver in PECE mode (predict, evaluate, correct, evaluate)."""
    return sample_sa_solver(model, x, sigmas, use_pece=True, **kwargs)
