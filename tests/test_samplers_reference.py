"""Samplers against independent references, on a toy denoiser with a closed-form answer (no network).

(a) k-diffusion's `sampling` module (the reference implementation of most of these samplers), fed the same
    denoiser, sigmas and noise. Needs `pip install --no-deps k-diffusion==0.1.1.post1 torchsde torchdiffeq
    trampoline` (plus scipy); skipped otherwise. Only `k_diffusion/sampling.py` is loaded, under a private package
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
from nodegraph_nodes.diffusion.samplers import BrownianNoiseSampler, GaussianNoiseSampler
from sampling_fixtures import gaussian_denoiser, gaussian_ode

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


def _start(sigmas: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(seed)) * float(sigmas[0]) + 0.3


# ---------------------------------------------------------------------------------------------------------------
# (a) k-diffusion

DETERMINISTIC = ["euler", "heun", "lms", "dpm_2", "dpmpp_2m"]
STOCHASTIC = [  # (ours, k-diffusion's function, noise sampler kind)
    ("euler_ancestral", "sample_euler_ancestral", GaussianNoiseSampler),
    ("dpm_2_ancestral", "sample_dpm_2_ancestral", GaussianNoiseSampler),
    ("dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", GaussianNoiseSampler),
    ("dpmpp_sde", "sample_dpmpp_sde", BrownianNoiseSampler),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", BrownianNoiseSampler),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", BrownianNoiseSampler),
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
    ours = samplers.SAMPLERS[name](model, x, sigmas)
    theirs = getattr(K, f"sample_{name}")(model, x, sigmas, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


@needs_k
@pytest.mark.parametrize("name,reference,noise", STOCHASTIC)
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_stochastic_samplers_match_k_diffusion_with_the_same_noise(name, reference, noise, eta):
    sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    model, x = gaussian_denoiser(), _start(sigmas)
    ours = samplers.SAMPLERS[name](model, x, sigmas, eta=eta, noise_sampler=noise(x, seed=7))
    theirs = getattr(K, reference)(model, x, sigmas, disable=True, eta=eta, noise_sampler=noise(x, seed=7))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


@needs_k
def test_dpmpp_2m_sde_heun_variant_matches_k_diffusion():
    sigmas = schedules.karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    model, x = gaussian_denoiser(), _start(sigmas)
    kwargs = dict(solver_type="heun", eta=1.0)
    ours = samplers.sample_dpmpp_2m_sde(model, x, sigmas, noise_sampler=BrownianNoiseSampler(x, 3), **kwargs)
    theirs = K.sample_dpmpp_2m_sde(model, x, sigmas, disable=True, noise_sampler=BrownianNoiseSampler(x, 3), **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


# ---------------------------------------------------------------------------------------------------------------
# (b) the exact ODE solution


def _error(name: str, steps: int) -> float:
    """Max error against the exact ODE solution, on a schedule from sigma 10 down to 0.5 (no final jump to 0)."""
    sigmas = schedules.karras_sigmas(steps, 0.5, 10.0)[:-1]  # end at sigma = 0.5: smooth, no final jump
    x = _start(sigmas)
    out = samplers.SAMPLERS[name](gaussian_denoiser(), x, sigmas)
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

    from sampling_fixtures import SD1_SCHEDULER_CONFIG

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
    point_mass = gaussian_denoiser(mean=0.3, std=1e-6)
    for name, sample in samplers.SAMPLERS.items():
        kwargs = {"noise_sampler": samplers.SAMPLER_NOISE[name](x, 0)} if name in samplers.SAMPLER_NOISE else {}
        out = sample(point_mass, x, sigmas, **kwargs)
        tolerance = 5e-3 if name.startswith("uni_pc") else 1e-4  # UniPC stops at sigma = 0.001, not 0
        assert (out - 0.3).abs().max() < tolerance, name


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
    sampler = BrownianNoiseSampler(like, seed=0)
    whole = sampler(10.0, 2.0)
    part = sampler(10.0, 8.0)
    later = sampler(8.0, 2.0)
    assert abs(float((whole * part).mean()) - math.sqrt(2 / 8)) < 0.03
    assert abs(float((part * later).mean())) < 0.03
    assert abs(float(whole.std()) - 1) < 0.03
    # Same seed, same queries -> same noise; recomputed sigmas within float rounding hit the same points.
    again = BrownianNoiseSampler(like, seed=0)
    torch.testing.assert_close(again(10.0, 2.0), whole)
    torch.testing.assert_close(again(10.0 * (1 + 1e-7), 8.0), part)
