"""lcm against independent references on the toy Gaussian denoiser, with the same noise.

k-diffusion's released package (0.1.1.post1, the newest on PyPI) has no `sample_lcm`; ComfyUI's copy of
k-diffusion's sampling module added it. So the reference is ComfyUI's step written out here: jump to the
denoiser's prediction, then, unless the next sigma is 0, add the next sigma times fresh noise (for
epsilon / v models ComfyUI's noise_scaling is x + sigma * noise). When an installed k-diffusion does have
`sample_lcm`, it is compared too.
"""
from __future__ import annotations

import pytest
import torch

from nodegraph_nodes.diffusion import schedules
from nodegraph_nodes.diffusion.sampler_registry import SAMPLERS
from nodegraph_nodes.diffusion.samplers import GaussianNoiseSampler
from support.sampling import gaussian_denoiser
from test_samplers_reference import K, SIGMA_MAX, SIGMA_MIN


def _setup(steps: int = 8):
    sigmas = schedules.karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX)
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(4)) * float(sigmas[0])
    return sigmas, x, gaussian_denoiser()


def _lcm_by_hand(model, x, sigmas, noise_sampler):
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i] * x.new_ones([x.shape[0]]))
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


def test_lcm_matches_comfyuis_step_written_out():
    sigmas, x, model = _setup()
    ours = SAMPLERS["lcm"](model, x, sigmas, noise_sampler=GaussianNoiseSampler(x, seed=3))
    theirs = _lcm_by_hand(model, x, sigmas, GaussianNoiseSampler(x, seed=3))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # the noise matters (a stochastic sampler), and the last step lands on the prediction
    other = SAMPLERS["lcm"](model, x, sigmas, noise_sampler=GaussianNoiseSampler(x, seed=4))
    assert (ours - other).abs().max() > 1e-3


@pytest.mark.skipif(K is None or not hasattr(K, "sample_lcm"),
                    reason="the installed k-diffusion has no sample_lcm (0.1.1.post1 predates it)")
def test_lcm_matches_k_diffusion_sample_lcm():
    sigmas, x, model = _setup()
    ours = SAMPLERS["lcm"](model, x, sigmas, noise_sampler=GaussianNoiseSampler(x, seed=3))
    theirs = K.sample_lcm(model, x, sigmas, disable=True, noise_sampler=GaussianNoiseSampler(x, seed=3))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
