"""Hires fix, checked by hand: LatentUpscale's bislerp on a latent small enough to compute on paper, and the
second pass's denoise rule written out from ComfyUI's definition (not only output shapes)."""
from __future__ import annotations

import math

import pytest
import torch

from nodegraph_nodes.diffusion.conditioning import Conditioning
from nodegraph_nodes.diffusion.image_ops import bislerp
from nodegraph_nodes.diffusion.sampling_run import ksample, ksampler_sigmas, prepare_noise, sample_with_sigmas
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from nodegraph_nodes.sd.latent import LatentUpscale
from support.tiny import SD1_SCHEDULER_CONFIG, tiny_sd1_pipeline


def _row(*vectors) -> torch.Tensor:
    """A [1, C, 1, W] latent whose pixels are the given C-vectors, left to right."""
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, len(vectors[0]), 1, len(vectors))


def test_bislerp_by_hand_on_a_row():
    """Two pixels a = (1, 0) and b = (0, 2), widened to 4. Sample centres fall at source x = -0.25, 0.25, 0.75,
    1.25 (clamped to 0 and 1). Between a and b the angle is pi/2; at ratio t the direction is
    sin((1-t) pi/2) a/|a| + sin(t pi/2) b/|b| and the length (1-t)|a| + t|b|:
      t = 0.25: (cos pi/8, sin pi/8) * 1.25;  t = 0.75: (sin pi/8, cos pi/8) * 1.75."""
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    expected = _row((1, 0), (1.25 * c, 1.25 * s), (1.75 * s, 1.75 * c), (0, 2))
    out = bislerp(_row((1, 0), (0, 2)), width=4, height=1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # the same along the height axis
    out = bislerp(_row((1, 0), (0, 2)).transpose(2, 3), width=1, height=4)
    torch.testing.assert_close(out, expected.transpose(2, 3), rtol=0, atol=1e-6)


def test_bislerp_edge_cases_follow_comfyui():
    """ComfyUI's rules for neighbours pointing the same way (cos > 1 - 1e-5: the first vector, unchanged) and
    opposite ways (cos < -1 + 1e-5: a plain linear blend)."""
    same = bislerp(_row((1, 0), (3, 0)), width=4, height=1)
    torch.testing.assert_close(same, _row((1, 0), (1, 0), (1, 0), (3, 0)), rtol=0, atol=0)
    opposite = bislerp(_row((1, 0), (-3, 0)), width=4, height=1)
    torch.testing.assert_close(opposite, _row((1, 0), (0, 0), (-2, 0), (-3, 0)), rtol=0, atol=1e-6)


def test_bislerp_2x2_to_3x3_by_hand():
    """A 2x2 latent to 3x3: centres at source -1/6, 5/6... clamp to 0, t = 0.5 in the middle, 1 at the end. The
    middle row and column are slerps at t = 1/2 (width first, then height, as ComfyUI does)."""
    x = torch.zeros(1, 2, 2, 2)
    x[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    x[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    x[0, :, 1, 0] = torch.tensor([0.0, 3.0])
    x[0, :, 1, 1] = torch.tensor([-1.0, 0.0])
    # source positions for 2 -> 3: (i + 0.5) * 2/3 - 0.5 = -1/6, 1/2, 7/6 -> clamped 0, 1/2, 1
    h = math.sqrt(0.5)
    top = [(1, 0), (h, h), (0, 1)]  # slerp of (1,0),(0,1) at 1/2: unit bisector, length 1
    bottom = [(0, 3), (-2 * h, 2 * h), (-1, 0)]  # (0,3),(-1,0): bisector (-h, h), length 2
    expected = torch.zeros(1, 2, 3, 3)
    for j in range(3):
        a, b = torch.tensor(top[j]), torch.tensor(bottom[j])
        expected[0, :, 0, j], expected[0, :, 2, j] = a, b
    # middle row: slerp between top[j] and bottom[j] at 1/2
    expected[0, :, 1, 0] = torch.tensor([h, h]) * 2.0  # (1,0),(0,3): 90 degrees, length 2
    expected[0, :, 1, 2] = torch.tensor([-h, h]) * 1.0  # (0,1),(-1,0): 90 degrees, length 1
    expected[0, :, 1, 1] = torch.tensor([0.0, 1.0]) * 1.5  # (h,h),(-h,h) length 1 and 2: bisector (0,1)
    torch.testing.assert_close(bislerp(x, width=3, height=3), expected, rtol=0, atol=1e-6)


def test_latent_upscale_node_by_hand():
    """The node works in pixels (a side is at least 64, divided by 8) and keeps the latent's other keys. A 2-wide
    latent of a = (1, 0) | b = (0, 2) in every row, widened to 8: sample centres at source x = i/4 - 3/8, so the
    ratios between a and b are t = 0, 0, 1/8, 3/8, 5/8, 7/8, 1, 1. At 90 degrees bislerp gives the direction
    (cos(t pi/2), sin(t pi/2)) with length 1 + t; bilinear gives (1 - t) a + t b; nearest-exact a, a, a, a, b, b,
    b, b."""
    latent = {"samples": _row((1, 0), (0, 2)).expand(1, 2, 8, 2).contiguous(), "batch_index": [0]}
    ts = [0, 0, 1 / 8, 3 / 8, 5 / 8, 7 / 8, 1, 1]
    node = LatentUpscale()

    def rows(*pixels):
        return _row(*pixels).expand(1, 2, 8, 8)

    (out,) = node.execute(latent, "bislerp", 64, 64, "disabled")
    assert out["batch_index"] == [0]
    slerped = [((1 + t) * math.cos(t * math.pi / 2), (1 + t) * math.sin(t * math.pi / 2)) for t in ts]
    torch.testing.assert_close(out["samples"], rows(*slerped), rtol=0, atol=1e-6)
    (lin,) = node.execute(latent, "bilinear", 64, 64, "disabled")
    torch.testing.assert_close(lin["samples"], rows(*[(1 - t, 2 * t) for t in ts]), rtol=0, atol=1e-6)
    (near,) = node.execute(latent, "nearest-exact", 64, 64, "disabled")
    torch.testing.assert_close(near["samples"], rows(*[(1, 0)] * 4, *[(0, 2)] * 4), rtol=0, atol=0)


@pytest.fixture(scope="module")
def sd1():
    pipe = tiny_sd1_pipeline()
    positive, negative = pipe.encode_prompt("a photo of a cat", "cpu", 1, True, "blurry")
    return pipe.unet, Conditioning(positive), Conditioning(negative)


def test_hires_second_pass_is_the_tail_of_a_longer_schedule(sd1):
    """ComfyUI's denoise d over n steps: build the schedule for int(n / d) steps, keep its last n + 1 sigmas, add
    the seed's noise at the first of them (noise * sigma, not sqrt(1 + sigma^2): not a full denoise) and sample."""
    unet, positive, negative = sd1
    sampling = DiscreteModelSampling.from_config(SD1_SCHEDULER_CONFIG)
    upscaled = bislerp(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)), 12, 12)
    steps, denoise, seed = 3, 0.5, 9
    full = ksampler_sigmas(sampling, "karras", "euler", 6)  # int(3 / 0.5) = 6 steps
    tail = full[-(steps + 1):]
    torch.testing.assert_close(ksampler_sigmas(sampling, "karras", "euler", steps, denoise), tail, rtol=0, atol=0)
    start = upscaled + prepare_noise(upscaled, seed) * float(tail[0])
    by_hand = sample_with_sigmas(unet, sampling, positive, negative, start, tail, seed=seed, cfg=7.0,
                                 sampler_name="euler", add_noise=False)
    ours = ksample(unet, sampling, positive, negative, upscaled, seed=seed, steps=steps, cfg=7.0,
                   sampler_name="euler", scheduler="karras", denoise=denoise)
    torch.testing.assert_close(ours, by_hand, rtol=0, atol=1e-6)
    assert (ours - upscaled).abs().max() > 0.1
