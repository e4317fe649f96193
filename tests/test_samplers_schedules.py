"""Schedules, the model's sigma table, KSampler's sigma selection and previews, against hand-computed cases."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from nodegraph_nodes.diffusion import names, sampler_registry, schedules
from nodegraph_nodes.diffusion.sampling_run import ksampler_sigmas, slice_sigmas
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from nodegraph_nodes.diffusion.preview import LATENT_RGB, latent_to_rgb
from support.tiny import SD1_SCHEDULER_CONFIG


@pytest.fixture(scope="module")
def sd1() -> DiscreteModelSampling:
    return DiscreteModelSampling.from_config(SD1_SCHEDULER_CONFIG)


def _at(ms, timesteps):
    return torch.tensor([float(ms.sigmas[t]) for t in timesteps] + [0.0])


# ---------------------------------------------------------------------------------------------------------------
# Names


# ComfyUI 0.3.75's KSampler.SAMPLERS (comfy/samplers.py: KSAMPLER_NAMES + ddim, uni_pc, uni_pc_bh2), in its order.
COMFYUI_SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
COMFYUI_SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                      "linear_quadratic", "kl_optimal"]
NOT_YET: set[str] = set()  # anything listed here must be in README's Differences from ComfyUI


def test_published_names_are_comfyuis_in_its_order():
    assert len(COMFYUI_SAMPLERS) == 42
    assert names.SAMPLER_NAMES == [n for n in COMFYUI_SAMPLERS if n not in NOT_YET]
    assert names.SCHEDULER_NAMES == COMFYUI_SCHEDULERS


def test_published_names_are_exactly_the_implemented_ones():
    assert names.SAMPLER_NAMES == list(sampler_registry.SAMPLERS)
    assert names.SCHEDULER_NAMES == list(schedules.SCHEDULERS)
    assert len(set(names.SAMPLER_NAMES)) == len(names.SAMPLER_NAMES)
    assert names.DISCARD_PENULTIMATE_SIGMA_SAMPLERS <= set(names.SAMPLER_NAMES)


def test_names_module_does_not_import_torch():
    code = "import sys; import nodegraph_nodes.diffusion.names; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="nodes", check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------------------
# Training schedules and the sigma table


@pytest.mark.parametrize("schedule,diffusers_name", [
    ("linear", "linear"), ("scaled_linear", "scaled_linear"), ("cosine", "squaredcos_cap_v2"),
])
def test_training_schedules_are_diffusers_tables(schedule, diffusers_name):
    from diffusers import DDPMScheduler

    config = {"beta_schedule": schedule, "beta_start": 0.00085, "beta_end": 0.012}
    ms = DiscreteModelSampling.from_config(config)
    theirs = DDPMScheduler(beta_schedule=diffusers_name, beta_start=0.00085, beta_end=0.012).alphas_cumprod
    expected = ((1 - theirs.double()) / theirs.double()) ** 0.5
    torch.testing.assert_close(ms.sigmas, expected.float(), rtol=0, atol=0)


def test_cosine_schedule_follows_improved_ddpm():
    ms = DiscreteModelSampling.from_config({"beta_schedule": "cosine"})
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    alpha_bar = 1 / (1 + float(ms.sigmas[100]) ** 2)
    assert alpha_bar == pytest.approx(f(101) / f(0), rel=1e-5)


def test_unknown_training_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown beta schedule 'quadratic'"):
        DiscreteModelSampling.from_config({"beta_schedule": "quadratic"})


def test_sd1_sigma_table(sd1):
    assert sd1.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert sd1.sigma_max == pytest.approx(14.6146, abs=1e-3)
    assert torch.all(sd1.sigmas[1:] > sd1.sigmas[:-1])
    # sigma <-> timestep: exact at integers, nearest in log space, log-linear in between
    assert sd1.timestep(sd1.sigmas[[0, 500, 999]]).tolist() == [0.0, 500.0, 999.0]
    assert float(sd1.timestep(torch.tensor(float(sd1.sigmas[400]) * 1.0001))) == 400.0
    geometric_mean = math.sqrt(float(sd1.sigmas[2]) * float(sd1.sigmas[3]))
    assert float(sd1.sigma(torch.tensor(2.5))) == pytest.approx(geometric_mean, rel=1e-5)
    assert sd1.percent_to_sigma(0.0) == math.inf
    assert sd1.percent_to_sigma(1.0) == 0.0
    assert sd1.percent_to_sigma(0.5) == pytest.approx(float(sd1.sigma(torch.tensor(499.5))))


def test_noise_scaling(sd1):
    noise, latent = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5)
    top = sd1.noise_scaling(sd1.sigma_max, noise, latent)
    torch.testing.assert_close(top, latent + math.sqrt(1 + sd1.sigma_max**2))
    torch.testing.assert_close(sd1.noise_scaling(2.0, noise, latent), latent + 2.0)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_denoised_inverts_the_forward_process(prediction):
    ms = DiscreteModelSampling.from_config({**SD1_SCHEDULER_CONFIG, "prediction_type": prediction})
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    sigma = torch.tensor([0.5, 7.0])
    abar = (1 / (1 + sigma**2)).view(-1, 1, 1, 1)
    x_vp = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    output = eps if prediction == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
    x = x_vp / abar.sqrt()  # the same point in VE form
    torch.testing.assert_close(ms.calculate_input(sigma, x), x_vp)
    torch.testing.assert_close(ms.calculate_denoised(sigma, output, x), x0, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Spacings


def test_normal(sd1):
    torch.testing.assert_close(schedules.normal_sigmas(sd1, 10), _at(sd1, range(999, -1, -111)))


def test_sgm_uniform(sd1):
    # linspace(999, 0, 5) without its last point: 999, 749.25, 499.5, 249.75 -> log-linear sigmas
    expected = [float(sd1.sigmas[999])]
    for t in (749.25, 499.5, 249.75):
        lo, w = int(t), t - int(t)
        expected.append(math.exp((1 - w) * math.log(sd1.sigmas[lo]) + w * math.log(sd1.sigmas[lo + 1])))
    torch.testing.assert_close(schedules.sgm_uniform_sigmas(sd1, 4), torch.tensor(expected + [0.0]), rtol=1e-5, atol=0)


def test_simple(sd1):
    # stride 1000 / 3: timesteps 999, 999 - int(333.3), 999 - int(666.7)
    torch.testing.assert_close(schedules.simple_sigmas(sd1, 3), _at(sd1, [999, 666, 333]))


def test_ddim_uniform(sd1):
    # stride 1000 // 3 = 333 from timestep 1: 1, 334, 667, descending
    torch.testing.assert_close(schedules.ddim_uniform_sigmas(sd1, 3), _at(sd1, [667, 334, 1]))


def test_karras_exponential_kl_optimal():
    lo, hi = 0.1, 10.0
    mid_karras = ((hi ** (1 / 7) + lo ** (1 / 7)) / 2) ** 7
    torch.testing.assert_close(schedules.karras_sigmas(3, lo, hi), torch.tensor([hi, mid_karras, lo, 0.0]))
    torch.testing.assert_close(schedules.exponential_sigmas(3, lo, hi), torch.tensor([hi, 1.0, lo, 0.0]))
    mid_kl = math.tan((math.atan(lo) + math.atan(hi)) / 2)
    torch.testing.assert_close(schedules.kl_optimal_sigmas(3, lo, hi), torch.tensor([hi, mid_kl, lo, 0.0]))


def test_linear_quadratic(sd1):
    # 4 steps: linear 0, 0.0125; quadratic through 0.025 (value and slope continuous) to 0.275; then 1
    expected = torch.tensor([1.0, 0.9875, 0.975, 0.725, 0.0]) * sd1.sigma_max
    torch.testing.assert_close(schedules.linear_quadratic_sigmas(sd1, 4), expected)


def test_beta_matches_scipy_quantiles(sd1):
    stats = pytest.importorskip("scipy.stats")
    import numpy as np

    timesteps = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, 20, endpoint=False), 0.6, 0.6) * 999)
    unique = [int(t) for i, t in enumerate(timesteps) if i == 0 or t != timesteps[i - 1]]
    torch.testing.assert_close(schedules.beta_sigmas(sd1, 20), _at(sd1, unique))


@pytest.mark.parametrize("scheduler", names.SCHEDULER_NAMES)
def test_every_scheduler_is_descending_with_trailing_zero(sd1, scheduler):
    sigmas = schedules.calculate_sigmas(sd1, scheduler, 12)
    # ddim_uniform keeps every (1000 // 12 = 83)-th timestep from 1: 13 steps, as in ComfyUI
    assert sigmas.dtype == torch.float32 and len(sigmas) == (14 if scheduler == "ddim_uniform" else 13)
    assert sigmas[-1] == 0 and torch.all(sigmas[1:] < sigmas[:-1])


# ---------------------------------------------------------------------------------------------------------------
# KSampler's choice and cut of sigmas


def test_ksampler_sigmas_denoise_and_discard(sd1):
    full10 = schedules.normal_sigmas(sd1, 10)
    torch.testing.assert_close(ksampler_sigmas(sd1, "normal", "euler", 5, denoise=0.5), full10[-6:])
    # int(4 / 0.3) = 13 steps computed, last 5 sigmas kept
    torch.testing.assert_close(ksampler_sigmas(sd1, "karras", "euler", 4, denoise=0.3),
                               schedules.calculate_sigmas(sd1, "karras", 13)[-5:])
    assert len(ksampler_sigmas(sd1, "normal", "euler", 5, denoise=0.0)) == 0
    six = schedules.normal_sigmas(sd1, 6)
    torch.testing.assert_close(ksampler_sigmas(sd1, "normal", "dpm_2", 5), torch.cat([six[:-2], six[-1:]]))


def test_slice_sigmas():
    sigmas = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    torch.testing.assert_close(slice_sigmas(sigmas, 0, 2, force_full_denoise=False), torch.tensor([5.0, 4.0, 3.0]))
    torch.testing.assert_close(slice_sigmas(sigmas, 1, 3, force_full_denoise=True), torch.tensor([4.0, 3.0, 0.0]))
    torch.testing.assert_close(slice_sigmas(sigmas, 3, 10000, force_full_denoise=True), torch.tensor([2.0, 1.0, 0.0]))
    assert slice_sigmas(sigmas, 5, None, force_full_denoise=True) is None
    assert sigmas[-1] == 0 and sigmas[2] == 3.0  # the input is not modified


# ---------------------------------------------------------------------------------------------------------------
# Previews


def test_preview_is_a_latent_sized_rgb_image():
    image = latent_to_rgb(torch.zeros(2, 4, 6, 10), "sd1")
    assert image.mode == "RGB" and image.size == (10, 6)
    assert image.getpixel((0, 0)) == (128, 128, 128)  # zero latent, zero bias: mid grey
    bright = latent_to_rgb(torch.tensor(LATENT_RGB["sdxl"][0]).T.reshape(3, 4)[:1].T.reshape(4, 1, 1) * 3, "sdxl")
    assert bright.getpixel((0, 0))[0] > 200
    with pytest.raises(ValueError):
        latent_to_rgb(torch.zeros(4, 2, 2), "sd3")
