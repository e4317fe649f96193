"""Area / mask / strength / timestep-range conditioning in the sampler, against ComfyUI's rules written out by hand:
each active prompt denoises its area's crop, weights are strength x mask (or strength with a linear edge ramp of
min(8, size // 4) cells for areas inside the latent), and a side's x0 is the per-pixel weighted mean."""
import pytest
import torch

from nodegraph_nodes.core import conditioning as cn
from nodegraph_nodes.diffusion.conditioning import Conditioning, entries
from nodegraph_nodes.diffusion.denoiser import CFGDenoiser
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from nodegraph_nodes.diffusion.regions import RegionalDenoiser, area_and_weight, make_denoiser
from support.tiny import SD1_SCHEDULER_CONFIG, tiny_unet


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    unet = tiny_unet()
    ms = DiscreteModelSampling.from_config(SD1_SCHEDULER_CONFIG)
    a = Conditioning(embeds=torch.randn(1, 77, 32))
    b = Conditioning(embeds=torch.randn(1, 77, 32))
    neg = Conditioning(embeds=torch.randn(1, 77, 32))
    x = torch.randn(1, 4, 8, 16) * 3
    sigma = torch.tensor([3.0])
    return unet, ms, a, b, neg, x, sigma


def plain(unet, ms, cond, x, sigma, neg=None, cfg=1.0):
    with torch.no_grad():
        return CFGDenoiser(unet, ms, cond, neg, cfg)(x, sigma)


def regional(unet, ms, pos, x, sigma, neg=None, cfg=1.0):
    with torch.no_grad():
        return RegionalDenoiser(unet, ms, pos, neg, cfg)(x, sigma)


def test_one_plain_prompt_takes_the_batched_path(setup):
    unet, ms, a, _, neg, _, _ = setup
    assert isinstance(make_denoiser(unet, ms, a, neg, 7.0), CFGDenoiser)
    assert isinstance(make_denoiser(unet, ms, (a, a), neg, 7.0), RegionalDenoiser)


def test_identical_prompts_combined_equal_one(setup):
    unet, ms, a, _, neg, x, sigma = setup
    (both,) = cn.ConditioningCombine().execute(a, a)
    assert torch.allclose(regional(unet, ms, both, x, sigma, neg, 7.0), plain(unet, ms, a, x, sigma, neg, 7.0),
                          atol=1e-4)


def test_two_areas_side_by_side(setup):
    unet, ms, a, b, _, x, sigma = setup
    (left,) = cn.ConditioningSetArea().execute(a, 64, 64, 0, 0, 1.0)
    (right,) = cn.ConditioningSetArea().execute(b, 64, 64, 64, 0, 1.0)
    (both,) = cn.ConditioningCombine().execute(left, right)
    out = regional(unet, ms, both, x, sigma)
    da = plain(unet, ms, a, x[..., :8], sigma)  # each prompt sees only its own 64 px crop
    db = plain(unet, ms, b, x[..., 8:], sigma)
    # 8-cell areas ramp over min(8, 8 // 4) = 2 cells at inner edges: weights 0.5, 1 (left of the seam, mirrored)
    assert torch.allclose(out[..., :7], da[..., :7], atol=1e-5)
    assert torch.allclose(out[..., 9:], db[..., 1:], atol=1e-5)
    assert torch.allclose(out[..., 7], da[..., 7], atol=1e-5) and torch.allclose(out[..., 8], db[..., 0], atol=1e-5)
    # with an overlap, the weights meet: area a widened by 16 px overlaps b on 2 columns
    (wide,) = cn.ConditioningSetArea().execute(a, 80, 64, 0, 0, 2.0)
    (both,) = cn.ConditioningCombine().execute(wide, right)
    out = regional(unet, ms, both, x, sigma)
    dwide = plain(unet, ms, a, x[..., :10], sigma)
    wa = 2.0 * torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5])  # 10 cells: ramp min(8, 10 // 4) = 2 -> 1, 0.5 at end
    wb = torch.tensor([0.5, 1, 1, 1, 1, 1, 1, 1])
    expected_col8 = (wa[8] * dwide[..., 8] + wb[0] * db[..., 0]) / (wa[8] + wb[0])
    expected_col9 = (wa[9] * dwide[..., 9] + wb[1] * db[..., 1]) / (wa[9] + wb[1])
    assert torch.allclose(out[..., 8], expected_col8, atol=1e-5)
    assert torch.allclose(out[..., 9], expected_col9, atol=1e-5)


def test_mask_and_strength_weights(setup):
    unet, ms, a, b, _, x, sigma = setup
    mask = torch.zeros(64, 128)
    mask[:, :40] = 1.0  # the left 40 px: 5 latent cells after bilinear resizing
    (masked,) = cn.ConditioningSetMask().execute(a, mask, 0.5, "default")
    (weak,) = cn.ConditioningSetAreaStrength().execute(b, 0.25)
    (both,) = cn.ConditioningCombine().execute(masked, weak)
    out = regional(unet, ms, both, x, sigma)
    da, db = plain(unet, ms, a, x, sigma), plain(unet, ms, b, x, sigma)
    m = torch.nn.functional.interpolate(mask[None, None], size=(8, 16), mode="bilinear")[0, 0] * 0.5
    assert torch.allclose(out, (m * da + 0.25 * db) / (m + 0.25), atol=1e-5)
    # "mask bounds": the model sees only the mask's bounding box
    (bounded,) = cn.ConditioningSetMask().execute(a, mask, 1.0, "mask bounds")
    area, weight = area_and_weight(entries(bounded)[0], 1, 4, 8, 16)
    assert area == (8, 5, 0, 0) and weight.shape == (1, 4, 8, 5)
    out = regional(unet, ms, bounded, x, sigma)
    assert torch.allclose(out[..., :5], plain(unet, ms, a, x[..., :5], sigma), atol=1e-5)
    assert torch.equal(out[..., 5:], torch.zeros_like(out[..., 5:]))  # nobody covers these cells: 0, as ComfyUI


def test_percentage_area_and_timestep_range(setup):
    unet, ms, a, b, _, x, sigma = setup
    (pct,) = cn.ConditioningSetAreaPercentage().execute(a, 0.5, 1.0, 0.5, 0.0, 1.0)
    area, _ = area_and_weight(entries(pct)[0], 1, 4, 8, 16)
    assert area == (8, 8, 0, 8)
    (late,) = cn.ConditioningSetTimestepRange().execute(a, 0.5, 1.0)
    (both,) = cn.ConditioningCombine().execute(late, b)
    high, low = torch.tensor([ms.percent_to_sigma(0.2)]), torch.tensor([ms.percent_to_sigma(0.8)])
    assert torch.allclose(regional(unet, ms, both, x, high), plain(unet, ms, b, x, high), atol=1e-5)
    mid = regional(unet, ms, both, x, low)
    assert torch.allclose(mid, (plain(unet, ms, a, x, low) + plain(unet, ms, b, x, low)) / 2, atol=1e-5)


def test_cfg_combines_the_sides(setup):
    unet, ms, a, b, neg, x, sigma = setup
    (left,) = cn.ConditioningSetArea().execute(a, 64, 64, 0, 0, 1.0)
    (right,) = cn.ConditioningSetArea().execute(b, 64, 64, 64, 0, 1.0)
    (pos,) = cn.ConditioningCombine().execute(left, right)
    out = regional(unet, ms, pos, x, sigma, neg, 5.0)
    cond = regional(unet, ms, pos, x, sigma)
    uncond = plain(unet, ms, neg, x, sigma)
    assert torch.allclose(out, uncond + (cond - uncond) * 5.0, atol=1e-4)


def test_conditioning_value_nodes():
    a = Conditioning(embeds=torch.ones(1, 77, 4), pooled=torch.ones(1, 3))
    b = Conditioning(embeds=torch.full((1, 154, 4), 3.0), pooled=torch.full((1, 3), 5.0))
    (zero,) = cn.ConditioningZeroOut().execute((a, b))
    assert all(c.embeds.abs().sum() == 0 and c.pooled.abs().sum() == 0 for c in zero)
    (cat,) = cn.ConditioningConcat().execute(a, b)
    assert cat.embeds.shape == (1, 231, 4) and cat.embeds[0, 100, 0] == 3.0
    (avg,) = cn.ConditioningAverage().execute(a, b, 0.25)
    assert avg.embeds.shape == (1, 77, 4) and torch.allclose(avg.embeds, torch.full((1, 77, 4), 0.25 + 2.25))
    assert torch.allclose(avg.pooled, torch.full((1, 3), 0.25 + 3.75))
    (avg,) = cn.ConditioningAverage().execute(b, a, 0.5)  # from is shorter: zero-padded
    assert torch.allclose(avg.embeds[0, 100], torch.full((4,), 1.5)) and torch.allclose(avg.embeds[0, 0],
                                                                                        torch.full((4,), 2.0))
    (area,) = cn.ConditioningSetArea().execute((a, b), 64, 128, 16, 8, 2.0)
    assert [c.area for c in area] == [(16, 8, 1, 2)] * 2 and area[0].strength == 2.0
    assert a.area is None  # inputs unchanged
