"""Every sampler by ComfyUI's name: the function, the noise it draws, and whether it needs the unconditional
prediction (CFG++). `names.SAMPLER_NAMES` lists exactly these names, in ComfyUI's order (a test checks both ways).

Noise, as ComfyUI draws it for a prompt seed (`NOISE[name](x, seed, sigmas)`):
* ancestral and other stochastic samplers: independent unit Gaussians from a generator seeded with the seed;
* the DPM-Solver++ SDE family: torchsde's Brownian tree over [smallest non-zero sigma, largest sigma], seeded with
  the seed, kept on the CPU, or on the latent's device for the `_gpu` names.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from . import dpm_solver, samplers, samplers_cfgpp, samplers_multistep, samplers_sde
from .samplers import BrownianTreeNoiseSampler, GaussianNoiseSampler, NoiseSampler

NoiseFactory = Callable[[torch.Tensor, int, torch.Tensor], NoiseSampler]


def gaussian_noise(x: torch.Tensor, seed: int, sigmas: torch.Tensor) -> NoiseSampler:
    return GaussianNoiseSampler(x, seed)


def brownian_noise_cpu(x: torch.Tensor, seed: int, sigmas: torch.Tensor) -> NoiseSampler:
    return BrownianTreeNoiseSampler.over(x, sigmas, seed, cpu=True)


def brownian_noise_device(x: torch.Tensor, seed: int, sigmas: torch.Tensor) -> NoiseSampler:
    return BrownianTreeNoiseSampler.over(x, sigmas, seed, cpu=False)


_heun_2m_sde = partial(samplers.sample_dpmpp_2m_sde, solver_type="heun")

# name: (function, noise factory or None for deterministic samplers)
_TABLE: dict[str, tuple[Callable[..., torch.Tensor], NoiseFactory | None]] = {
    "euler": (samplers.sample_euler, None),
    "euler_cfg_pp": (samplers_cfgpp.sample_euler_cfg_pp, None),
    "euler_ancestral": (samplers.sample_euler_ancestral, gaussian_noise),
    "euler_ancestral_cfg_pp": (samplers_cfgpp.sample_euler_ancestral_cfg_pp, gaussian_noise),
    "heun": (samplers.sample_heun, None),
    "heunpp2": (samplers_multistep.sample_heunpp2, None),
    "dpm_2": (samplers.sample_dpm_2, None),
    "dpm_2_ancestral": (samplers.sample_dpm_2_ancestral, gaussian_noise),
    "lms": (samplers.sample_lms, None),
    "dpm_fast": (dpm_solver.sample_dpm_fast, gaussian_noise),
    "dpm_adaptive": (dpm_solver.sample_dpm_adaptive, gaussian_noise),
    "dpmpp_2s_ancestral": (samplers.sample_dpmpp_2s_ancestral, gaussian_noise),
    "dpmpp_2s_ancestral_cfg_pp": (samplers_cfgpp.sample_dpmpp_2s_ancestral_cfg_pp, gaussian_noise),
    "dpmpp_sde": (samplers.sample_dpmpp_sde, brownian_noise_cpu),
    "dpmpp_sde_gpu": (samplers.sample_dpmpp_sde, brownian_noise_device),
    "dpmpp_2m": (samplers.sample_dpmpp_2m, None),
    "dpmpp_2m_cfg_pp": (samplers_cfgpp.sample_dpmpp_2m_cfg_pp, None),
    "dpmpp_2m_sde": (samplers.sample_dpmpp_2m_sde, brownian_noise_cpu),
    "dpmpp_2m_sde_gpu": (samplers.sample_dpmpp_2m_sde, brownian_noise_device),
    "dpmpp_2m_sde_heun": (_heun_2m_sde, brownian_noise_cpu),
    "dpmpp_2m_sde_heun_gpu": (_heun_2m_sde, brownian_noise_device),
    "dpmpp_3m_sde": (samplers.sample_dpmpp_3m_sde, brownian_noise_cpu),
    "dpmpp_3m_sde_gpu": (samplers.sample_dpmpp_3m_sde, brownian_noise_device),
    "ddpm": (samplers.sample_ddpm, gaussian_noise),
    "lcm": (samplers.sample_lcm, gaussian_noise),
    "ipndm": (samplers_multistep.sample_ipndm, None),
    "ipndm_v": (samplers_multistep.sample_ipndm_v, None),
    "deis": (samplers_multistep.sample_deis, None),
    "res_multistep": (samplers_multistep.sample_res_multistep, gaussian_noise),
    "res_multistep_cfg_pp": (samplers_multistep.sample_res_multistep_cfg_pp, gaussian_noise),
    "res_multistep_ancestral": (samplers_multistep.sample_res_multistep_ancestral, gaussian_noise),
    "res_multistep_ancestral_cfg_pp": (samplers_multistep.sample_res_multistep_ancestral_cfg_pp, gaussian_noise),
    "gradient_estimation": (samplers_multistep.sample_gradient_estimation, None),
    "gradient_estimation_cfg_pp": (samplers_multistep.sample_gradient_estimation_cfg_pp, None),
    "er_sde": (samplers_sde.sample_er_sde, gaussian_noise),
    "seeds_2": (samplers_sde.sample_seeds_2, gaussian_noise),
    "seeds_3": (samplers_sde.sample_seeds_3, gaussian_noise),
    "sa_solver": (samplers_sde.sample_sa_solver, gaussian_noise),
    "sa_solver_pece": (samplers_sde.sample_sa_solver_pece, gaussian_noise),
    "ddim": (samplers.sample_euler, None),
    "uni_pc": (samplers.sample_uni_pc, None),
    "uni_pc_bh2": (samplers.sample_uni_pc_bh2, None),
}

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {name: entry[0] for name, entry in _TABLE.items()}
SAMPLER_NOISE: dict[str, NoiseFactory] = {name: entry[1] for name, entry in _TABLE.items() if entry[1] is not None}

# Samplers that read the unconditional prediction (the denoiser must compute it, even at cfg 1).
NEEDS_UNCOND: frozenset[str] = frozenset(name for name in SAMPLERS if "cfg_pp" in name)


def sampler_function(name: str) -> Callable[..., torch.Tensor]:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; known: {list(SAMPLERS)}") from None
