"""Samplers against independent references, on a toy denoiser with a closed-form answer (no network).

(a) k-diffusion's `sampling` module (the reference implementation of most of these samplers), fed the same
    denoiser, sigmas and noise; for the SDE samplers, k-diffusion's own seeded BrownianTreeNoiseSampler, so the
    noise is checked seed for seed. Needs `pip install --no-deps k-diffusion==0.1.1.post1 torchdiffeq` (torchsde
    and scipy are dependencies of nodegraph); skipped otherwise. Only `k_diffusion/sampling.py` is loaded, under a private package
    name with a two-line `utils`, so k-diffusion's __init__ (which imports torchvision) never runs and nothing is
    left in sys.modules.
(b) the exact probability-flow ODE solution for Gaussian data: every deterministic sampler converges to it, at the
    order its method promises.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from nodegraph_nodes.diffusion import samplers, schedules
from nodegraph_nodes.diffusion.sampler_registry import SAMPLER_NOISE, SAMPLERS
from nodegraph_nodes.diffusion.samplers import BrownianTreeNoiseSampler, GaussianNoiseSampler
from support.sampling import gaussian_denoiser, gaussian_ode

SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642


def _load_k_diffusion_sampling():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None, "k-diffusion is not installed (pip install --no-deps k-diffusion==0.1.1.post1 torchsde torchdiffeq trampoline)"
    for dep in ("torchsde", "torchdiffeq", "scipy"):
        if importlib.util.find_spec(dep) is None:
            return None, f"k-diffusion's sampling module needs {dep} (pip install --no-deps {dep})"
    path = Path(spec.submodule_search_locations[0]) / "sampling.py"
    package, name = "_kdiffusion_reference", "_kdiffusion_reference.sampling"
    parent = types.ModuleType(package)
    parent.__path__ = []
    utils = types.ModuleType(f"{package}.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    parent.utils = utils
    added = {package: parent, f"{package}.utils": utils}
    sys.modules.update(added)
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    finally:
        for key in added:
            sys.modules.pop(key, None)
    return module, None


K, K_MISSING = _load_k_diffusion_sampling()
needs_k = pytest.mark.skipif(K is None, reason=K_MISSING or "")


class _WithUncond:
    """A guided toy denoiser: cond and uncond Gaussian-data denoisers combined with CFG on x0, exposing the
    unconditional prediction as `uncond_denoised` (the contract CFG++ samplers read)."""

    def __init__(self, cond, uncond, cfg: float) -> None:
        self.cond, self.uncond, self.cfg = cond, uncond, cfg
        self.uncond_denoised = None
        self.calls = 0

    def __call__(self, x, sigma):
        self.calls += 1
        c, u = self.cond(x, sigma), self.uncond(x, sigma)
        self.uncond_denoised = u
        return u + (c - u) * self.cfg


def _start(sigmas: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(seed)) * float(sigmas[0]) + 0.3


# ---------------------------------------------------------------------------------------------------------------
# (a) k-diffusion

DETERMINISTIC = ["euler", "heun", "lms", "dpm_2", "dpmpp_2m"]


def _gaussian(x, seed, sigmas):
    return GaussianNoiseSampler(x, seed)


def _brownian(x, seed, sigmas):
    return BrownianTreeNoiseSampler.over(x, sigmas, seed)


class _OnTheSchedule:
    """k-diffusion 0.1.1's sample_dpmpp_sde asks its noise sampler for sigma_fn(t_fn(sigma)) = exp(-(-log sigma)),
    which float32 rounding can put one ulp off the schedule's sigma; ComfyUI's version (which we follow) asks at the
    schedule's sigma itself. A Brownian path queried an ulp apart differs by ~1e-3, so the reference's query times
    are snapped back onto the schedule (a relative 1e-6); the intermediate sigma is computed the same way by both."""

    def __init__(self, inner, sigmas: torch.Tensor) -> None:
        self.inner, self.sigmas = inner, sigmas

    def _snap(self, sigma):
        sigma = torch.as_tensor(sigma)
        close = (self.sigmas - sigma).abs() <= 1e-6 * sigma.abs()
        return self.sigmas[close][0] if bool(close.any()) else sigma

    def __call__(self, sigma, sigma_next):
        return self.inner(self._snap(sigma), self._snap(sigma_next))


STOCHASTIC = [  # (ours, k-diffusion's function, noise sampler kind)
    ("euler_ancestral", "sample_euler_ancestral", _gaussian),
    ("dpm_2_ancestral", "sample_dpm_2_ancestral", _gaussian),
    ("dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", _gaussian),
    ("dpmpp_sde", "sample_dpmpp_sde", _brownian),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", _brownian),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", _brownian),
]


@needs_k
@pytest.mark.parametrize("spacing", ["karras", "exponential"])
def test_spacings_match_k_diffusion(spacing):
    ours = getattr(schedules, f"{spacing}_sigmas")(12, SIGMA_MIN, SIGMA_MAX)
    theirs = getattr(K, f"get_sigmas_{spacing}")(12, SIGMA_MIN, SIGMA_MAX)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-6, atol=1e-6)


@needs_k
@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("spacing", ["karras", "exponential"])
def test_deterministic_samplers_match_k_diffusion(name, spacing):
    sigmas = getattr(schedules, f"{spacing}_sigmas")(10, SIGMA_MIN, SIGMA_MAX)
    model, x = gaussian_denoiser(), _start(sigmas)
    ours = SAMPLERS[name](model, x, sigmas)
    theirs = getattr(K, f"sample_{name}")(model, x, sigmas, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


@needs_k
@pytest.mark.parametrize("name,reference,noise", STOCHASTIC)
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_stochastic_samplers_match_k_diffusion_with_the_same_noise(name, reference, noise, eta):
    sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    model, x = gaussian_denoiser(), _start(sigmas)
    ours = SAMPLERS[name](model, x, sigmas, eta=eta, noise_sampler=noise(x, 7, sigmas))
    reference_noise = _OnTheSchedule(noise(x, 7, sigmas), sigmas)
    theirs = getattr(K, reference)(model, x, sigmas, disable=True, eta=eta, noise_sampler=reference_noise)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


@needs_k
def test_dpmpp_2m_sde_heun_variant_matches_k_diffusion():
    sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    model, x = gaussian_denoiser(), _start(sigmas)
    kwargs = dict(solver_type="heun", eta=1.0)
    ours = SAMPLERS["dpmpp_2m_sde_heun"](model, x, sigmas, noise_sampler=_brownian(x, 3, sigmas), eta=1.0)
    theirs = K.sample_dpmpp_2m_sde(model, x, sigmas, disable=True, noise_sampler=_brownian(x, 3, sigmas), **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


# ---------------------------------------------------------------------------------------------------------------
# (b) the exact ODE solution


def _error(name: str, steps: int) -> float:
    """Max error against the exact ODE solution, on a schedule from sigma 10 down to 0.5 (no final jump to 0)."""
    sigmas = schedules.karras_sigmas(steps, 0.5, 10.0)[:-1]  # end at sigma = 0.5: smooth, no final jump
    x = _start(sigmas)
    out = SAMPLERS[name](gaussian_denoiser(), x, sigmas)
    return float((out - gaussian_ode(x, float(sigmas[0]), float(sigmas[-1]))).abs().max())


@pytest.mark.parametrize(
    "name,order",
    [("euler", 1), ("heun", 2), ("dpm_2", 2), ("lms", 2), ("dpmpp_2m", 2), ("uni_pc", 2), ("uni_pc_bh2", 2)],
)
def test_ode_samplers_converge_at_their_order(name, order):
    coarse, fine = _error(name, 8), _error(name, 16)
    # Halving the step size divides the error by about 2^order (allow slack for the asymptotic regime).
    assert coarse / fine > 2 ** order * 0.6, (coarse, fine)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_uni_pc_matches_diffusers_unipc(variant):
    """diffusers' UniPCMultistepScheduler (order 3, data prediction, lower order at the end) run by hand on the
    toy denoiser (prediction_type="sample", so the scheduler takes x0) in its variance-preserving scale."""
    from diffusers import UniPCMultistepScheduler

    from support.tiny import SD1_SCHEDULER_CONFIG

    scheduler = UniPCMultistepScheduler(
        **{**SD1_SCHEDULER_CONFIG, "prediction_type": "sample", "timestep_spacing": "trailing"},
        solver_order=3, solver_type=variant, final_sigmas_type="sigma_min",
    )
    scheduler.set_timesteps(10)
    sigmas = scheduler.sigmas.float()
    model, x = gaussian_denoiser(), _start(sigmas)
    vp = x / (1 + sigmas[0] ** 2) ** 0.5
    for i, t in enumerate(scheduler.timesteps):
        vp = scheduler.step(model(vp * (1 + sigmas[i] ** 2) ** 0.5, sigmas[i : i + 1]), t, vp).prev_sample
    theirs = vp * (1 + sigmas[-1] ** 2) ** 0.5
    ours = samplers.sample_uni_pc(model, x, sigmas, variant=variant)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_samplers_reach_the_prediction_at_sigma_zero():
    """With a trailing 0 every sampler ends on the data: for Gaussian data that is the exact ODE end point up to
    the discretisation error, and exactly `mean` for a point-mass (std -> 0) denoiser."""
    sigmas = schedules.karras_sigmas(6, SIGMA_MIN, SIGMA_MAX)
    x = _start(sigmas)
    point_mass = _WithUncond(gaussian_denoiser(mean=0.3, std=1e-6), gaussian_denoiser(mean=0.3, std=1e-6), 1.0)
    for name, sample in SAMPLERS.items():
        kwargs = {"noise_sampler": SAMPLER_NOISE[name](x, 0, sigmas)} if name in SAMPLER_NOISE else {}
        if name.startswith("sa_solver"):  # its default stochastic interval comes from a real model's schedule
            kwargs["tau_func"] = lambda sigma: 1.0 if 1.0 <= sigma <= 10.0 else 0.0
        out = sample(point_mass, x, sigmas, **kwargs)
        tolerance, expected = 1e-4, torch.full_like(x, 0.3)
        if name.startswith("uni_pc"):
            tolerance = 5e-3  # UniPC stops at sigma = 0.001, not 0
        if name in ("dpm_fast", "dpm_adaptive"):  # DPM-Solver stops at sigma_min, on the exact ODE path
            expected = 0.3 + (x - 0.3) * float(sigmas[-2] / sigmas[0])
        assert (out - expected).abs().max() < tolerance, name


def test_ancestral_samplers_keep_the_right_marginal_variance():
    """Euler ancestral on Gaussian data ends with the data's distribution as steps grow (a check on sigma_up /
    sigma_down; at 30 steps the discretisation still shrinks the std by ~10%)."""
    sigmas = schedules.karras_sigmas(300, SIGMA_MIN, SIGMA_MAX)
    x = torch.randn(4000, 1, 1, 1, generator=torch.Generator().manual_seed(1)) * (0.25 + float(sigmas[0]) ** 2) ** 0.5
    out = samplers.sample_euler_ancestral(gaussian_denoiser(std=0.5), x, sigmas, noise_sampler=GaussianNoiseSampler(x, 2))
    assert abs(float(out.std()) - 0.5) < 0.03
    assert abs(float(out.mean()) - 0.3) < 0.03


def test_brownian_noise_has_brownian_covariance():
    """Increments over nested intervals are correlated as sqrt(short / long); disjoint ones are independent."""
    like = torch.zeros(20000)
    sampler = BrownianTreeNoiseSampler(like, 0, 1.0, 10.0)
    whole = sampler(10.0, 2.0)
    part = sampler(10.0, 8.0)
    later = sampler(8.0, 2.0)
    assert abs(float((whole * part).mean()) - math.sqrt(2 / 8)) < 0.03
    assert abs(float((part * later).mean())) < 0.03
    assert abs(float(whole.std()) - 1) < 0.03
    # Same seed, same queries -> same noise.
    again = BrownianTreeNoiseSampler(like, 0, 1.0, 10.0)
    assert torch.equal(again(10.0, 2.0), whole)


SDE = [  # ComfyUI's name, k-diffusion's function, its solver_type
    ("dpmpp_sde", "sample_dpmpp_sde", None),
    ("dpmpp_sde_gpu", "sample_dpmpp_sde", None),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", "midpoint"),
    ("dpmpp_2m_sde_gpu", "sample_dpmpp_2m_sde", "midpoint"),
    ("dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde", "heun"),
    ("dpmpp_2m_sde_heun_gpu", "sample_dpmpp_2m_sde", "heun"),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", None),
    ("dpmpp_3m_sde_gpu", "sample_dpmpp_3m_sde", None),
]


@needs_k
@pytest.mark.parametrize("name,reference,solver_type", SDE)
@pytest.mark.parametrize("spacing", ["karras", "normal"])
def test_sde_samplers_draw_k_diffusions_brownian_tree_seed_for_seed(name, reference, solver_type, spacing):
    """The noise a prompt seed gives the SDE samplers is k-diffusion's BrownianTreeNoiseSampler seeded with that
    seed over [smallest non-zero sigma, largest sigma] (what ComfyUI builds): the raw increments are identical, and
    the samplers fed our registry's noise match k-diffusion's samplers fed theirs."""
    if spacing == "karras":
        sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    else:
        from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
        from support.tiny import SD1_SCHEDULER_CONFIG

        sigmas = schedules.normal_sigmas(DiscreteModelSampling.from_config(SD1_SCHEDULER_CONFIG), 10)
    model, x = gaussian_denoiser(), _start(sigmas)
    seed = 156680208700286

    def reference_noise():
        return _OnTheSchedule(K.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed), sigmas)

    ours, theirs = SAMPLER_NOISE[name](x, seed, sigmas), reference_noise()
    for i in range(len(sigmas) - 2):
        assert torch.equal(ours(float(sigmas[i]), float(sigmas[i + 1])), theirs(sigmas[i], sigmas[i + 1]))
    kwargs = {} if solver_type is None else {"solver_type": solver_type}
    out = SAMPLERS[name](model, x, sigmas, noise_sampler=SAMPLER_NOISE[name](x, seed, sigmas))
    expected = getattr(K, reference)(model, x, sigmas, disable=True, noise_sampler=reference_noise(), **kwargs)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)
