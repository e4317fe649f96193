"""An interrupt stops sampling within one model call, not one sampler step (issue: Ctrl+C took a whole step or
more). The check sits in the denoiser, before and after each UNet / ControlNet call."""
from __future__ import annotations

import pytest
import torch

from nodegraph.engine.node import Interrupted
from nodegraph_nodes.diffusion.conditioning import Conditioning
from nodegraph_nodes.diffusion.sampling_run import ksample
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from support.tiny import SD1_SCHEDULER_CONFIG, tiny_unet


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    unet = tiny_unet()
    positive, negative = Conditioning(torch.randn(1, 77, 32)), Conditioning(torch.randn(1, 77, 32))
    return unet, DiscreteModelSampling.from_config(SD1_SCHEDULER_CONFIG), positive, negative


@pytest.mark.parametrize("sampler, stop_during_call", [("heun", 2), ("euler", 1), ("dpmpp_sde", 4)])
def test_interrupt_during_a_unet_call_stops_right_after_it(parts, sampler, stop_during_call):
    """heun and dpmpp_sde make two UNet calls per step and report progress after the first: a request that arrives
    during the second call must not let the next step's first call run."""
    unet, sampling, positive, negative = parts
    calls, steps_reported = [], []
    stop = {"asked": False}

    def count(module, args, output):
        calls.append(1)
        if len(calls) == stop_during_call:
            stop["asked"] = True  # as if Ctrl+C arrived while this call ran

    def interrupt():
        if stop["asked"]:
            raise Interrupted("interrupted")

    handle = unet.register_forward_hook(count)
    try:
        with pytest.raises(Interrupted):
            ksample(unet, sampling, positive, negative, torch.zeros(1, 4, 8, 8), seed=1, steps=6, cfg=7.5,
                    sampler_name=sampler, scheduler="normal", interrupt=interrupt,
                    callback=lambda step, total, x, d: steps_reported.append(step))
    finally:
        handle.remove()
    assert len(calls) == stop_during_call  # not one more UNet call after the request
    assert len(steps_reported) <= stop_during_call


def test_without_an_interrupt_every_call_runs(parts):
    unet, sampling, positive, negative = parts
    out = ksample(unet, sampling, positive, negative, torch.zeros(1, 4, 8, 8), seed=1, steps=3, cfg=7.5,
                  sampler_name="heun", scheduler="normal", interrupt=lambda: None)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
