"""The samplers ComfyUI 0.3.75 added beyond k-diffusion's classic set, each against an independent reference:

* k-diffusion 0.1.1's own dpm_fast / dpm_adaptive (and, through the CFG++ identity below, its euler, euler
  ancestral, DPM++(2S) ancestral and DPM++(2M));
* CFG++ identities: with the unconditional prediction equal to the guided one, a CFG++ sampler is its plain sampler;
* hand-derived steps: the update formulas of ComfyUI's implementation written out for 1-3 steps on a toy denoiser
  with a closed form (Gaussian data), not through our code;
* convergence: on Gaussian data the probability-flow ODE has an exact solution, and a deterministic solver's error
  must fall at its order as steps double; stochastic solvers must end with the data's distribution.
"""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from nodegraph_nodes.diffusion import schedules
from nodegraph_nodes.diffusion.sampler_registry import NEEDS_UNCOND, SAMPLER_NOISE, SAMPLERS
from nodegraph_nodes.diffusion.samplers import GaussianNoiseSampler
from nodegraph_nodes.diffusion.samplers_multistep import deis_coefficients
from nodegraph_nodes.diffusion.samplers_sde import reverse_time_sde_noise_scaler, sa_solver_coefficients, sa_solver_tau
from support.sampling import gaussian_denoiser, gaussian_ode
from test_samplers_reference import SIGMA_MAX, SIGMA_MIN, K, _WithUncond, needs_k

pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # inside k-diffusion


def _start(sigmas: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(seed)) * float(sigmas[0]) + 0.3


def _guided(cfg: float = 3.0) -> _WithUncond:
    return _WithUncond(gaussian_denoiser(mean=0.3, std=0.5), gaussian_denoiser(mean=-0.2, std=0.8), cfg)


def _same(cfg: float = 1.0) -> _WithUncond:
    return _WithUncond(gaussian_denoiser(), gaussian_denoiser(), cfg)


# ---------------------------------------------------------------------------------------------------------------
# k-diffusion


@needs_k
def test_dpm_fast_matches_k_diffusion():
    """ComfyUI runs k-diffusion's dpm_fast from sigmas[0] to the last non-zero sigma with len(sigmas) - 1
    evaluations."""
    sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    model, x = gaussian_denoiser(), _start(sigmas)
    ours = SAMPLERS["dpm_fast"](model, x, sigmas)
    theirs = K.sample_dpm_fast(model, x, sigmas[-2], sigmas[0], len(sigmas) - 1, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


@needs_k
@pytest.mark.parametrize("order", [2, 3])
def test_dpm_adaptive_matches_k_diffusion(order):
    """Same accepted / rejected steps; k-diffusion keeps t = -log sigma in float32 and we in float64, which moves
    the ~20 adaptive steps' end points by ~1e-6 and the result by up to ~1e-4."""
    sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    model, x = gaussian_denoiser(), _start(sigmas)
    ours = SAMPLERS["dpm_adaptive"](model, x, sigmas, order=order)
    theirs = K.sample_dpm_adaptive(model, x, sigmas[-2], sigmas[0], order=order, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-4)


@needs_k
@pytest.mark.parametrize("ours,reference,stochastic", [
    ("euler_cfg_pp", "sample_euler", False),
    ("euler_ancestral_cfg_pp", "sample_euler_ancestral", True),
    ("dpmpp_2s_ancestral_cfg_pp", "sample_dpmpp_2s_ancestral", True),
    ("dpmpp_2m_cfg_pp", "sample_dpmpp_2m", False),
])
def test_cfg_pp_without_guidance_is_the_plain_sampler_of_k_diffusion(ours, reference, stochastic):
    sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    model, x = _same(), _start(sigmas)
    noise = {"noise_sampler": GaussianNoiseSampler(x, 3)} if stochastic else {}
    out = SAMPLERS[ours](model, x, sigmas, **noise)
    noise = {"noise_sampler": GaussianNoiseSampler(x, 3)} if stochastic else {}
    expected = getattr(K, reference)(gaussian_denoiser(), x, sigmas, disable=True, **noise)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("ours,plain", [
    ("res_multistep_cfg_pp", "res_multistep"),
    ("res_multistep_ancestral_cfg_pp", "res_multistep_ancestral"),
    ("gradient_estimation_cfg_pp", "gradient_estimation"),
])
def test_cfg_pp_without_guidance_is_the_plain_sampler(ours, plain):
    sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    x = _start(sigmas)
    noise = (lambda: {"noise_sampler": GaussianNoiseSampler(x, 3)}) if ours in SAMPLER_NOISE else dict
    out = SAMPLERS[ours](_same(), x, sigmas, **noise())
    expected = SAMPLERS[plain](gaussian_denoiser(), x, sigmas, **noise())
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)


def test_cfg_pp_samplers_refuse_a_denoiser_without_the_unconditional_prediction():
    sigmas = schedules.karras_sigmas(3, SIGMA_MIN, SIGMA_MAX)
    for name in sorted(NEEDS_UNCOND):
        with pytest.raises(ValueError, match="unconditional prediction"):
            SAMPLERS[name](gaussian_denoiser(), _start(sigmas), sigmas)


# ---------------------------------------------------------------------------------------------------------------
# Hand-derived steps: ComfyUI's update formulas written out on three sigmas


S0, S1, S2 = 10.0, 3.0, 0.7


def _d(model, x, s):
    """The ODE slope (x - D(x, s)) / s."""
    return (x - model(x, torch.full((x.shape[0],), s))) / s


def _x0() -> torch.Tensor:
    return torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(5)) * S0


def test_euler_cfg_pp_by_hand():
    """x1 = D(x0) + s1 * (x0 - U(x0)) / s0, with D guided and U the unconditional prediction; x2 = D(x1) at s = 0."""
    model, x0 = _guided(), _x0()
    ref = _guided()
    d0 = ref(x0, torch.full((1,), S0))
    x1 = d0 + S1 * (x0 - ref.uncond_denoised) / S0
    x2 = ref(x1, torch.full((1,), S1))
    out = SAMPLERS["euler_cfg_pp"](model, x0, torch.tensor([S0, S1, 0.0]))
    torch.testing.assert_close(out, x2, rtol=0, atol=1e-5)


def test_dpmpp_2m_cfg_pp_by_hand():
    """Step 1: x1 = D0 + e^-h0 (x0 - U0); step 2 adds -expm1(-h1) / (2 r) (D1 - U0), r = h0 / h1, h = log ratio."""
    model, x0 = _guided(), _x0()
    ref = _guided()
    d0 = ref(x0, torch.full((1,), S0))
    u0 = ref.uncond_denoised
    h0, h1 = math.log(S0 / S1), math.log(S1 / S2)
    x1 = d0 + math.exp(-h0) * (x0 - u0)
    d1 = ref(x1, torch.full((1,), S1))
    u1 = ref.uncond_denoised
    x2 = d1 + math.exp(-h1) * (x1 - u1) - math.expm1(-h1) / (2 * (h0 / h1)) * (d1 - u0)
    out = SAMPLERS["dpmpp_2m_cfg_pp"](model, x0, torch.tensor([S0, S1, S2]))
    torch.testing.assert_close(out, x2, rtol=0, atol=1e-5)


def test_ipndm_by_hand():
    """Euler, then Adams-Bashforth 2 then 3 with equal-step weights (3, -1)/2 and (23, -16, 5)/12."""
    model, x0 = gaussian_denoiser(), _x0()
    s = [10.0, 7.0, 4.0, 1.0]
    d0 = _d(model, x0, s[0])
    x1 = x0 + (s[1] - s[0]) * d0
    d1 = _d(model, x1, s[1])
    x2 = x1 + (s[2] - s[1]) * (3 * d1 - d0) / 2
    d2 = _d(model, x2, s[2])
    x3 = x2 + (s[3] - s[2]) * (23 * d2 - 16 * d1 + 5 * d0) / 12
    out = SAMPLERS["ipndm"](model, x0, torch.tensor(s))
    torch.testing.assert_close(out, x3, rtol=0, atol=1e-4)


def test_ipndm_v_equals_ipndm_on_equal_steps():
    """The variable-step weights of orders 1-3 reduce to Adams-Bashforth's on equal steps. (Order 4's, as ComfyUI
    ships them from the diff-solvers code, give 57/24 for the newest slope on equal steps where AB4 has 55/24; we
    keep ComfyUI's, so the identity is checked up to order 3.)"""
    s = torch.linspace(12.0, 1.0, 8)
    model, x0 = gaussian_denoiser(), _x0()
    ours = SAMPLERS["ipndm_v"](model, x0, s, max_order=3)
    torch.testing.assert_close(ours, SAMPLERS["ipndm"](model, x0, s, max_order=3), rtol=0, atol=1e-4)


def test_res_multistep_by_hand():
    """Step 1 is Euler; step 2: x2 = e^-h x1 + h (b1 D1 + b2 D0) with h = log(s1/s2), c2 = -log(s0/s1) / h,
    b1 = phi1(-h) - phi2(-h) / c2, b2 = phi2(-h) / c2, phi1(t) = (e^t - 1) / t, phi2(t) = (phi1(t) - 1) / t."""
    model, x0 = gaussian_denoiser(), _x0()
    d0 = model(x0, torch.full((1,), S0))
    x1 = x0 + (x0 - d0) / S0 * (S1 - S0)
    d1 = model(x1, torch.full((1,), S1))
    h = math.log(S1 / S2)
    c2 = -math.log(S0 / S1) / h
    phi1 = math.expm1(-h) / -h
    phi2 = (phi1 - 1) / -h
    x2 = math.exp(-h) * x1 + h * ((phi1 - phi2 / c2) * d1 + phi2 / c2 * d0)
    out = SAMPLERS["res_multistep"](model, x0, torch.tensor([S0, S1, S2]), noise_sampler=GaussianNoiseSampler(x0, 0))
    torch.testing.assert_close(out, x2, rtol=0, atol=1e-5)


def test_gradient_estimation_by_hand():
    """Euler, then Euler plus (gamma - 1) (d1 - d0) dt with gamma = 2."""
    model, x0 = gaussian_denoiser(), _x0()
    d0 = _d(model, x0, S0)
    x1 = x0 + d0 * (S1 - S0)
    d1 = _d(model, x1, S1)
    x2 = x1 + d1 * (S2 - S1) + (d1 - d0) * (S2 - S1)
    out = SAMPLERS["gradient_estimation"](model, x0, torch.tensor([S0, S1, S2]))
    torch.testing.assert_close(out, x2, rtol=0, atol=1e-5)


def test_heunpp2_by_hand():
    """Three sigmas before the end: slopes at x, at the Euler point on s1 and at the Euler point on s2, weighted
    1 - w2 - w3, w2 = s1 / (3 s0), w3 = s2 / (3 s0); then a two-slope step (w2 = s2 / (2 s0)); then Euler."""
    model, x0 = gaussian_denoiser(), _x0()
    s = [10.0, 3.0, 0.7, 0.2]
    d = _d(model, x0, s[0])
    xa = x0 + d * (s[1] - s[0])
    da = _d(model, xa, s[1])
    xb = xa + da * (s[2] - s[1])
    db = _d(model, xb, s[2])
    w2, w3 = s[1] / (3 * s[0]), s[2] / (3 * s[0])
    x1 = x0 + (d * (1 - w2 - w3) + da * w2 + db * w3) * (s[1] - s[0])
    d1 = _d(model, x1, s[1])
    xc = x1 + d1 * (s[2] - s[1])
    dc = _d(model, xc, s[2])
    w = s[2] / (2 * s[0])
    x2 = x1 + (d1 * (1 - w) + dc * w) * (s[2] - s[1])
    x3 = x2 + _d(model, x2, s[2]) * (s[3] - s[2])
    out = SAMPLERS["heunpp2"](model, x0, torch.tensor(s))
    torch.testing.assert_close(out, x3, rtol=0, atol=1e-5)


def test_er_sde_first_step_by_hand():
    """Stage 1 with the default noise scale f(l) = l (e^(l^0.3) + 10): r = f(s1) / f(s0), x1 = r x0 + (1 - r) D0
    + sqrt(s1^2 - s0^2 r^2) * noise (none here: f grows faster than sigma, so the variance term is negative -> 0
    only when it is; we check with s_noise = 0)."""
    model, x0 = gaussian_denoiser(), _x0()
    f = lambda v: v * (math.exp(v**0.3) + 10.0)  # noqa: E731
    r = f(S1) / f(S0)
    x1 = r * x0 + (1 - r) * model(x0, torch.full((1,), S0))
    out = SAMPLERS["er_sde"](model, x0, torch.tensor([S0, S1]), s_noise=0.0)
    torch.testing.assert_close(out, x1, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Convergence on the exact ODE


def _ode_error(name: str, steps: int, **kwargs) -> float:
    sigmas = schedules.karras_sigmas(steps, 0.5, 10.0)[:-1]
    x = _start(sigmas)
    out = SAMPLERS[name](gaussian_denoiser(), x, sigmas, **kwargs)
    return float((out - gaussian_ode(x, float(sigmas[0]), float(sigmas[-1]))).abs().max())


@pytest.mark.parametrize("name,order,kwargs", [
    ("ipndm_v", 3, {}),
    ("res_multistep", 2, {}),
    ("seeds_2", 2, {"eta": 0.0}),  # eta = 0: the deterministic exponential integrator
    ("seeds_3", 3, {"eta": 0.0}),
    ("er_sde", 2, {"s_noise": 0.0, "noise_scaler": partial(reverse_time_sde_noise_scaler, eta=0.0)}),  # the ODE
    ("deis", 2, {}),
    ("sa_solver", 3, {"tau_func": sa_solver_tau(0.0, 0.0, eta=0.0)}),  # tau = 0: the ODE
    ("sa_solver_pece", 3, {"tau_func": sa_solver_tau(0.0, 0.0, eta=0.0)}),
])
def test_deterministic_new_samplers_converge_at_their_order(name, order, kwargs):
    coarse, fine = _ode_error(name, 8, **kwargs), _ode_error(name, 16, **kwargs)
    assert coarse / fine > 2 ** order * 0.6, (coarse, fine)


@pytest.mark.parametrize("name", ["er_sde", "seeds_2", "seeds_3", "res_multistep_ancestral", "euler_ancestral_cfg_pp",
                                  "sa_solver", "sa_solver_pece"])
def test_stochastic_new_samplers_end_with_the_data_distribution(name):
    """On N(0.3, 0.5^2) data, 200 steps from pure noise end with that mean and standard deviation (4000 samples):
    a check of each solver's noise terms."""
    sigmas = schedules.karras_sigmas(200, SIGMA_MIN, SIGMA_MAX)
    x = torch.randn(4000, 1, 1, 1, generator=torch.Generator().manual_seed(1)) * (0.25 + float(sigmas[0]) ** 2) ** 0.5
    model = _WithUncond(gaussian_denoiser(std=0.5), gaussian_denoiser(std=0.5), 1.0)
    kwargs = {"tau_func": sa_solver_tau(10.0, 0.5)} if name.startswith("sa_solver") else {}
    out = SAMPLERS[name](model, x, sigmas, noise_sampler=SAMPLER_NOISE[name](x, 2, sigmas), **kwargs)
    assert abs(float(out.std()) - 0.5) < 0.03
    assert abs(float(out.mean()) - 0.3) < 0.03


# ---------------------------------------------------------------------------------------------------------------
# Coefficients against numerical quadrature (scipy)


def _lagrange(nodes, j):
    return lambda v: math.prod((v - n) / (nodes[j] - n) for k, n in enumerate(nodes) if k != j)


def test_deis_weights_are_the_kernel_integrals_of_the_lagrange_basis():
    """DEIS's weight j at step i: the integral over [t_i, t_(i+1)] (VP time of the sigmas, EDM's range) of
    0.5 beta(t) / sqrt(alpha (1 - alpha)) times the Lagrange basis polynomial j through t_i, t_(i-1), ..."""
    integrate = pytest.importorskip("scipy.integrate")
    sigmas = [14.6, 8.0, 4.0, 1.5, 0.4]
    eps_s, smin, smax = 1e-3, 0.002, 80.0
    beta_d = 2 * (math.log(smin**2 + 1) / eps_s - math.log(smax**2 + 1)) / (eps_s - 1)
    beta_0 = math.log(smax**2 + 1) - 0.5 * beta_d
    t = [(math.sqrt(beta_0**2 + 2 * beta_d * math.log(s * s + 1)) - beta_0) / beta_d for s in sigmas]

    def kernel(v):
        alpha = math.exp(-0.5 * v * v * beta_d - v * beta_0)
        return 0.5 * (v * beta_d + beta_0) / math.sqrt(alpha * (1 - alpha))

    weights = deis_coefficients(sigmas, max_order=3)
    assert weights[0] == []
    for i in (1, 2, 3):
        nodes = [t[i - k] for k in range(min(i + 1, 3))]
        for j, w in enumerate(weights[i]):
            expected = integrate.quad(lambda v: kernel(v) * _lagrange(nodes, j)(v), t[i], t[i + 1])[0]
            assert w == pytest.approx(expected, rel=2e-3, abs=1e-6)  # a 10000-point Riemann sum, as ComfyUI


@pytest.mark.parametrize("tau", [0.0, 1.0])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_sa_solver_weights_are_exponential_integrals_of_the_lagrange_basis(tau, count):
    """b_j = alpha_t (1 + tau^2) * integral over [lambda_s, lambda_t] of e^((1 + tau^2)(x - lambda_t)) L_j(x) dx."""
    integrate = pytest.importorskip("scipy.integrate")
    lambdas = [-math.log(v) for v in (9.0, 5.0, 2.5)][-count:]
    lambda_s, lambda_t = lambdas[-1], -math.log(1.2)
    k = 1 + tau**2
    b = sa_solver_coefficients(1.2, lambdas, lambda_s, lambda_t, tau)
    for j in range(count):
        f = lambda v: k * math.exp(k * (v - lambda_t)) * _lagrange(lambdas, j)(v)  # noqa: E731
        expected = 1.2 * math.exp(lambda_t) * integrate.quad(f, lambda_s, lambda_t)[0]
        assert b[j] == pytest.approx(expected, rel=1e-6, abs=1e-9)
