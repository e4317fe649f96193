"""Custom sampling: NOISE / GUIDER / SAMPLER / SIGMAS nodes on the tiny SD1 model, and the sigma and CFG-patch
nodes against hand-derived cases (k-diffusion's schedule functions where it has them)."""
from __future__ import annotations

import math

import pytest
import torch

from nodegraph.engine import default_registry
from nodegraph_nodes.diffusion import guidance, schedules
from nodegraph_nodes.diffusion.denoiser import apply_cfg
from nodegraph_nodes.diffusion.sigma_table import DiscreteModelSampling
from nodegraph_nodes.sd import custom_sampling as cs
from support.tiny import SD1_SCHEDULER_CONFIG
from support.workflows import txt2img
from test_samplers_reference import K, needs_k


def _advanced(sampler: dict, *, guider: dict | None = None, noise: dict | None = None, steps: int = 4,
              scheduler: str = "normal") -> dict:
    """txt2img with KSampler replaced by SamplerCustomAdvanced(RandomNoise, CFGGuider, sampler, BasicScheduler)."""
    prompt = txt2img()
    del prompt["3"]
    prompt["20"] = noise or {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}}
    prompt["21"] = guider or {"class_type": "CFGGuider", "inputs": {
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "cfg": 7.0}}
    prompt["22"] = sampler
    prompt["23"] = {"class_type": "BasicScheduler", "inputs": {
        "model": ["4", 0], "scheduler": scheduler, "steps": steps, "denoise": 1.0}}
    prompt["24"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["20", 0], "guider": ["21", 0], "sampler": ["22", 0], "sigmas": ["23", 0],
        "latent_image": ["5", 0]}}
    prompt["8"]["inputs"]["samples"] = ["24", 0]
    return prompt


def _select(name: str) -> dict:
    return {"class_type": "KSamplerSelect", "inputs": {"sampler_name": name}}


def _latent(run, nid):
    assert run.status == "success", run.error
    return run.values[nid][0]["samples"]


@pytest.mark.parametrize("sampler_name,scheduler", [
    ("euler", "normal"), ("euler_ancestral", "karras"), ("dpmpp_2m_sde", "karras"), ("dpmpp_sde_gpu", "normal"),
    ("dpmpp_2m_cfg_pp", "simple"), ("er_sde", "exponential"),
])
def test_sampler_custom_advanced_equals_ksampler_bit_for_bit(runner, sampler_name, scheduler):
    ks = _latent(runner.run(txt2img(**{"3.sampler_name": sampler_name, "3.scheduler": scheduler})), "3")
    custom = _latent(runner.run(_advanced(_select(sampler_name), scheduler=scheduler)), "24")
    assert torch.equal(custom, ks)


def test_split_sigmas_recipe_equals_ksampler_advanceds_split(runner):
    """BasicScheduler -> SplitSigmas(3): high sigmas with RandomNoise, then low sigmas with DisableNoise, equals
    KSamplerAdvanced steps 0-3 (leftover noise kept) then 3-end (no noise added)."""
    prompt = txt2img()
    common = {"model": ["4", 0], "steps": 6, "cfg": 7.0, "sampler_name": "euler", "scheduler": "karras",
              "positive": ["6", 0], "negative": ["7", 0]}
    prompt["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "enable", "noise_seed": 42, "latent_image": ["5", 0], "start_at_step": 0,
        "end_at_step": 3, "return_with_leftover_noise": "enable"}}
    prompt["10"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "disable", "noise_seed": 42, "latent_image": ["3", 0], "start_at_step": 3,
        "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    prompt["8"]["inputs"]["samples"] = ["10", 0]
    two_ksamplers = _latent(runner.run(prompt), "10")

    prompt = _advanced(_select("euler"), steps=6, scheduler="karras")
    prompt["25"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["23", 0], "step": 3}}
    prompt["24"]["inputs"]["sigmas"] = ["25", 0]
    prompt["26"] = {"class_type": "DisableNoise", "inputs": {}}
    prompt["27"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["26", 0], "guider": ["21", 0], "sampler": ["22", 0], "sigmas": ["25", 1],
        "latent_image": ["24", 0]}}
    prompt["8"]["inputs"]["samples"] = ["27", 0]
    run = runner.run(prompt)
    assert torch.equal(_latent(run, "27"), two_ksamplers)


@pytest.mark.parametrize("node,ksampler_name", [
    ({"class_type": "SamplerEulerAncestral", "inputs": {"eta": 0.0, "s_noise": 1.0}}, "euler"),
    ({"class_type": "SamplerDPMPP_2M_SDE", "inputs": {"solver_type": "heun", "eta": 1.0, "s_noise": 1.0,
                                                      "noise_device": "cpu"}}, "dpmpp_2m_sde_heun"),
    ({"class_type": "SamplerDPMPP_3M_SDE", "inputs": {"eta": 1.0, "s_noise": 1.0, "noise_device": "gpu"}},
     "dpmpp_3m_sde_gpu"),
    ({"class_type": "SamplerLMS", "inputs": {"order": 4}}, "lms"),
    ({"class_type": "SamplerSASolver", "inputs": {"model": ["4", 0], "eta": 1.0, "sde_start_percent": 0.2,
                                                  "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
                                                  "corrector_order": 4, "use_pece": False, "simple_order_2": False}},
     "sa_solver"),
    ({"class_type": "SamplerER_SDE", "inputs": {"solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0,
                                                "s_noise": 1.0}}, "er_sde"),
])
def test_sampler_nodes_pass_their_options(runner, node, ksampler_name):
    """A Sampler* node at settings that name a KSampler sampler (eta 0 ancestral is Euler) gives its latent."""
    ks = _latent(runner.run(txt2img(**{"3.sampler_name": ksampler_name})), "3")
    assert torch.equal(_latent(runner.run(_advanced(node)), "24"), ks)


def test_sampler_node_options_change_the_result(runner):
    base = _latent(runner.run(_advanced({"class_type": "SamplerDPMPP_SDE", "inputs": {
        "eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "cpu"}})), "24")
    assert torch.equal(base, _latent(runner.run(txt2img(**{"3.sampler_name": "dpmpp_sde"})), "3"))
    other = _latent(runner.run(_advanced({"class_type": "SamplerDPMPP_SDE", "inputs": {
        "eta": 0.5, "s_noise": 1.0, "r": 0.5, "noise_device": "cpu"}})), "24")
    assert not torch.allclose(base, other)


def test_basic_guider_is_cfg_one(runner):
    ks = _latent(runner.run(txt2img(**{"3.cfg": 1.0})), "3")
    basic = {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}}
    assert torch.equal(_latent(runner.run(_advanced(_select("euler"), guider=basic)), "24"), ks)


def test_dual_cfg_guider_reduces_to_cfg_when_cond2_is_the_negative(runner):
    """regular: neg + (cond2 - neg) cfg2 + (cond1 - cond2) cfg1 = neg + (cond1 - neg) cfg1 when cond2 = neg;
    nested: neg + cfg2 (cond2 + (cond1 - cond2) cfg1 - neg) = neg + (cond1 - neg) cfg1 cfg2."""
    for style, cfg1, cfg2, expected_cfg in [("regular", 7.0, 3.0, 7.0), ("nested", 3.5, 2.0, 7.0)]:
        dual = {"class_type": "DualCFGGuider", "inputs": {
            "model": ["4", 0], "cond1": ["6", 0], "cond2": ["7", 0], "negative": ["7", 0], "cfg_conds": cfg1,
            "cfg_cond2_negative": cfg2, "style": style}}
        out = _latent(runner.run(_advanced(_select("euler"), guider=dual)), "24")
        ks = _latent(runner.run(txt2img(**{"3.cfg": expected_cfg})), "3")
        torch.testing.assert_close(out, ks, rtol=1e-5, atol=1e-4)  # same sum, other rounding


def test_perp_neg_guider_without_negative_scale_is_cfg_against_the_empty_prompt(runner):
    """neg_scale 0: empty + cfg (positive - empty), i.e. CFG with the empty prompt as the negative."""
    prompt = _advanced(_select("euler"), guider={"class_type": "PerpNegGuider", "inputs": {
        "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "empty_conditioning": ["7", 0],
        "cfg": 7.0, "neg_scale": 0.0}})
    out = _latent(runner.run(prompt), "24")
    torch.testing.assert_close(out, _latent(runner.run(txt2img()), "3"), rtol=1e-5, atol=1e-4)


def test_perp_neg_removes_only_the_perpendicular_part_of_the_negative():
    pos, neg, empty = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.zeros(1, 2)
    # neg = (1, 1): along pos (1, 0), perpendicular (0, 1) -> result = cfg * (pos - neg_scale * (0, 1))
    out = guidance.perp_neg(pos, neg, empty, neg_scale=0.5, cfg=2.0)
    torch.testing.assert_close(out, torch.tensor([[4.0, -1.0]]))


def test_cfg_patch_nodes_run_and_change_the_image(runner):
    base = _latent(runner.run(txt2img()), "3")
    for patch in ({"class_type": "RescaleCFG", "inputs": {"model": ["4", 0], "multiplier": 0.7}},
                  {"class_type": "APG", "inputs": {"model": ["4", 0], "eta": 0.5, "norm_threshold": 5.0,
                                                   "momentum": 0.5}},
                  {"class_type": "CFGZeroStar", "inputs": {"model": ["4", 0]}},
                  {"class_type": "CFGNorm", "inputs": {"model": ["4", 0], "strength": 0.5}}):
        prompt = txt2img()
        prompt["30"] = patch
        prompt["3"]["inputs"]["model"] = ["30", 0]
        out = _latent(runner.run(prompt), "3")
        assert torch.isfinite(out).all() and not torch.allclose(out, base), patch["class_type"]
    prompt = txt2img()
    prompt["30"] = {"class_type": "RescaleCFG", "inputs": {"model": ["4", 0], "multiplier": 0.0}}
    prompt["3"]["inputs"]["model"] = ["30", 0]
    torch.testing.assert_close(_latent(runner.run(prompt), "3"), base, rtol=1e-5, atol=1e-4)  # multiplier 0: CFG


def _pair():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 3, 3, generator=g) * 5
    return x, torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g), torch.tensor([5.0, 5.0])


def test_rescale_cfg_matches_the_v_space_formula():
    """Guidance on v = (x / (1 + s^2) - x0) sqrt(1 + s^2) / s, the result's std per sample rescaled towards the
    conditional v's by the multiplier, mapped back to x0."""
    x, cond, uncond, sigma = _pair()
    s = 5.0
    v = lambda x0: (x / (1 + s * s) - x0) * math.sqrt(1 + s * s) / s  # noqa: E731
    v_cfg = v(uncond) + (v(cond) - v(uncond)) * 4.0
    ratio = v(cond).std(dim=(1, 2, 3), keepdim=True) / v_cfg.std(dim=(1, 2, 3), keepdim=True)
    v_final = 0.7 * v_cfg * ratio + 0.3 * v_cfg
    expected = x / (1 + s * s) - v_final * s / math.sqrt(1 + s * s)
    out = apply_cfg([guidance.RescaleCFG(0.7)], x, sigma, cond, uncond, 4.0)
    torch.testing.assert_close(out, expected)


def test_cfg_zero_star_and_cfg_norm_by_hand():
    x, cond, uncond, sigma = _pair()
    cfg = 4.0
    plain = uncond + (cond - uncond) * cfg
    ec, eu = (x - cond).flatten(1), (x - uncond).flatten(1)
    alpha = ((ec * eu).sum(1) / ((eu * eu).sum(1) + 1e-8)).reshape(2, 1, 1, 1)
    expected = plain + uncond * (alpha - 1) + cfg * uncond * (1 - alpha)
    torch.testing.assert_close(apply_cfg([guidance.CFGZeroStar()], x, sigma, cond, uncond, cfg), expected)
    normed = apply_cfg([guidance.CFGNorm(1.0)], x, sigma, cond, uncond, cfg)
    assert (normed.norm(dim=1) <= cond.norm(dim=1) * (1 + 1e-5)).all()
    scale = (cond.norm(dim=1, keepdim=True) / (plain.norm(dim=1, keepdim=True) + 1e-8)).clamp(0, 1)
    torch.testing.assert_close(normed, plain * scale)


# ---------------------------------------------------------------------------------------------------------------
# Schedulers and sigma nodes


@needs_k
def test_scheduler_nodes_match_k_diffusion():
    torch.testing.assert_close(cs.KarrasScheduler().execute(12, 14.614642, 0.0291675, 5.0)[0],
                               K.get_sigmas_karras(12, 0.0291675, 14.614642, rho=5.0))
    torch.testing.assert_close(cs.ExponentialScheduler().execute(12, 14.614642, 0.0291675)[0],
                               K.get_sigmas_exponential(12, 0.0291675, 14.614642))
    torch.testing.assert_close(cs.PolyexponentialScheduler().execute(12, 14.614642, 0.0291675, 2.0)[0],
                               K.get_sigmas_polyexponential(12, 0.0291675, 14.614642, rho=2.0))
    torch.testing.assert_close(cs.VPScheduler().execute(12, 19.9, 0.1, 0.001)[0], K.get_sigmas_vp(12))


def test_laplace_scheduler_by_hand():
    sigmas = cs.LaplaceScheduler().execute(5, 14.614642, 0.0291675, 0.0, 0.5)[0]
    # quantiles 0, .25, .5, .75, 1 of log sigma ~ Laplace(0, 0.5): the median is e^0 = 1, the ends are clamped
    lam = 0.5 * math.log(0.5 + 1e-5)  # x = 0.25: mu - beta * sign(0.25) * log(1 - 2 * 0.25 + eps)
    expected = torch.tensor([14.614642, math.exp(-lam), 1.0, math.exp(lam), 0.0291675])
    torch.testing.assert_close(sigmas, expected.float())


def test_align_your_steps_scheduler():
    table = schedules.AYS_NOISE_LEVELS["SD1"]
    ten = cs.AlignYourStepsScheduler().execute("SD1", 10, 1.0)[0]
    torch.testing.assert_close(ten, torch.tensor(table[:-1] + [0.0]))
    twenty = cs.AlignYourStepsScheduler().execute("SD1", 20, 1.0)[0]
    assert len(twenty) == 21 and float(twenty[2]) == pytest.approx(table[1], rel=1e-5)  # the table's points stay
    assert float(twenty[1]) == pytest.approx(math.sqrt(table[0] * table[1]), rel=1e-5)  # log-linear in between
    half = cs.AlignYourStepsScheduler().execute("SDXL", 10, 0.5)[0]
    torch.testing.assert_close(half, torch.tensor(schedules.AYS_NOISE_LEVELS["SDXL"][5:-1] + [0.0]))


def test_sd_turbo_scheduler():
    ms = DiscreteModelSampling.from_config(SD1_SCHEDULER_CONFIG)

    class Model:
        scheduler_config = SD1_SCHEDULER_CONFIG

    one = cs.SDTurboScheduler().execute(Model(), 1, 1.0)[0]
    torch.testing.assert_close(one, torch.tensor([float(ms.sigmas[999]), 0.0]))
    two = cs.SDTurboScheduler().execute(Model(), 2, 0.5)[0]
    torch.testing.assert_close(two, torch.tensor([float(ms.sigmas[499]), float(ms.sigmas[399]), 0.0]))


def test_sigma_editing_nodes():
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    high, low = cs.SplitSigmas().execute(sigmas, 2)
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = cs.SplitSigmasDenoise().execute(sigmas, 0.5)  # 4 steps: the low part takes round(4 * 0.5) = 2
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = cs.SplitSigmasDenoise().execute(sigmas, 0.0)
    assert high.tolist() == [] and low.tolist() == [0.0]
    assert cs.FlipSigmas().execute(sigmas)[0].tolist() == pytest.approx([0.0001, 1.0, 2.0, 5.0, 10.0])
    assert cs.SetFirstSigma().execute(sigmas, 136.0)[0].tolist() == [136.0, 5.0, 2.0, 1.0, 0.0]
    assert sigmas[0] == 10.0  # inputs are never modified (they may be cached upstream)
    extended = cs.ExtendIntermediateSigmas().execute(torch.tensor([10.0, 6.0, 2.0, 0.0]), 2, -1.0, 5.0, "linear")[0]
    assert extended.tolist() == [10.0, 8.0, 6.0, 4.0, 2.0, 0.0]
    sine = cs.ExtendIntermediateSigmas().execute(torch.tensor([10.0, 0.0]), 3, 20.0, 0.0, "sine")[0]
    ramp = [1 - math.cos(t * math.pi / 2) for t in (1 / 3, 2 / 3)]
    assert sine.tolist() == pytest.approx([10.0, 10 - 10 * ramp[0], 10 - 10 * ramp[1], 0.0], rel=1e-6)
    assert cs.ManualSigmas().execute("14.6, 7 3.1;0")[0].tolist() == pytest.approx([14.6, 7.0, 3.1, 0.0])


def test_node_declarations_are_comfyuis():
    registry = default_registry()
    expected = {
        "SamplerCustomAdvanced": (["noise", "guider", "sampler", "sigmas", "latent_image"],
                                  ["output", "denoised_output"]),
        "CFGGuider": (["model", "positive", "negative", "cfg"], ["GUIDER"]),
        "DualCFGGuider": (["model", "cond1", "cond2", "negative", "cfg_conds", "cfg_cond2_negative", "style"],
                          ["GUIDER"]),
        "RandomNoise": (["noise_seed"], ["NOISE"]),
        "SplitSigmas": (["sigmas", "step"], ["high_sigmas", "low_sigmas"]),
        "SamplerDPMAdaptative": (["order", "rtol", "atol", "h_init", "pcoeff", "icoeff", "dcoeff",
                                  "accept_safety", "eta", "s_noise"], ["SAMPLER"]),
        "BasicScheduler": (["model", "scheduler", "steps", "denoise"], ["SIGMAS"]),
        "CFGZeroStar": (["model"], ["patched_model"]),
    }
    for name, (inputs, outputs) in expected.items():
        info = registry.get(name).object_info()
        assert info["input_order"]["required"] == inputs, name
        assert info["output_name"] == outputs, name


def test_add_noise_by_hand():
    from nodegraph_nodes.diffusion.guidance import NoiseSpec
    from nodegraph_nodes.diffusion.sampling_run import prepare_noise

    class Model:
        latent_scale = 0.18215

    latent = {"samples": torch.full((1, 4, 2, 2), 0.5)}
    sigmas = torch.tensor([8.0, 3.0, 1.0])
    (out,) = cs.AddNoise().execute(Model(), NoiseSpec(7), sigmas, latent)
    noise = prepare_noise(latent["samples"], 7)
    torch.testing.assert_close(out["samples"], (0.5 * 0.18215 + noise * 7.0) / 0.18215)
    (empty,) = cs.AddNoise().execute(Model(), NoiseSpec(7), sigmas, {"samples": torch.zeros(1, 4, 2, 2)})
    torch.testing.assert_close(empty["samples"], noise * 7.0 / 0.18215)
    (same,) = cs.AddNoise().execute(Model(), NoiseSpec(0, add=False), sigmas, latent)
    torch.testing.assert_close(same["samples"], latent["samples"])


def test_apg_by_hand():
    """ComfyUI's APG replaces cond by uncond + g' + (cond - uncond) / cfg, so CFG gives uncond + (cond - uncond)
    + cfg * g', where g' is the guidance clipped to norm_threshold with its part along cond scaled by eta (eta 1 and
    no clipping: CFG at cfg + 1, what its tooltip calls the default behaviour)."""
    x, cond, uncond, sigma = _pair()
    plain = uncond + (cond - uncond) * 5.0
    out = apply_cfg([guidance.APG(1.0, 0.0, 0.0)], x, sigma, cond, uncond, 4.0)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    g = cond - uncond
    g = g * torch.clamp(2.0 / g.flatten(1).norm(dim=1), max=1.0).reshape(2, 1, 1, 1)
    unit = cond / cond.flatten(1).norm(dim=1).reshape(2, 1, 1, 1)
    parallel = (g * unit).flatten(1).sum(1).reshape(2, 1, 1, 1) * unit
    expected = uncond + (cond - uncond) + 4.0 * ((g - parallel) + 0.5 * parallel)
    out = apply_cfg([guidance.APG(0.5, 2.0, 0.0)], x, sigma, cond, uncond, 4.0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_identity_self_attention_keeps_each_tokens_value():
    """PAG's perturbation: attention whose map is the identity, i.e. to_out(to_v(h)) for each token."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    h = torch.randn(2, 5, 16)
    attn.set_processor(guidance.IdentitySelfAttention())
    with torch.no_grad():
        torch.testing.assert_close(attn(h), attn.to_out[1](attn.to_out[0](attn.to_v(h))))
        # ...which is what real attention gives when every token attends only to itself
        attn.set_processor(None)
        q = attn.to_q(h).view(2, 5, 2, 8).transpose(1, 2)
        v = attn.to_v(h).view(2, 5, 2, 8).transpose(1, 2)
        eye = torch.where(torch.eye(5, dtype=torch.bool), 0.0, float("-inf"))
        own = torch.nn.functional.scaled_dot_product_attention(q, q, v, attn_mask=eye).transpose(1, 2).reshape(2, 5, 16)
        torch.testing.assert_close(attn.to_out[0](own), attn.to_out[0](attn.to_v(h)))


def test_perturbed_attention_guidance_node(runner):
    base = _latent(runner.run(txt2img()), "3")
    outs = {}
    for scale in (0.0, 3.0):
        prompt = txt2img()
        prompt["30"] = {"class_type": "PerturbedAttentionGuidance", "inputs": {"model": ["4", 0], "scale": scale}}
        prompt["3"]["inputs"]["model"] = ["30", 0]
        outs[scale] = _latent(runner.run(prompt), "3")
    torch.testing.assert_close(outs[0.0], base, rtol=1e-5, atol=1e-4)  # scale 0: plain CFG (on x0)
    assert torch.isfinite(outs[3.0]).all() and not torch.allclose(outs[3.0], base)


def test_sag_blur_by_hand():
    """The blur is a normalised 9-tap Gaussian per axis (a constant stays constant; an impulse spreads as the
    outer product of the taps); the map blurs only where the head-averaged attention a key receives exceeds 1."""
    constant = torch.full((1, 2, 12, 12), 0.7)
    torch.testing.assert_close(guidance.gaussian_blur(constant, 9, 2.0), constant)
    impulse = torch.zeros(1, 1, 12, 12)
    impulse[0, 0, 6, 6] = 1.0
    taps = torch.tensor([math.exp(-0.5 * (i / 2.0) ** 2) for i in range(-4, 5)])
    taps = taps / taps.sum()
    blurred = guidance.gaussian_blur(impulse, 9, 2.0)
    torch.testing.assert_close(blurred[0, 0, 2:11, 2:11], taps[:, None] * taps[None, :])
    # 2 heads, a 4x4 middle grid (16 tokens) for an 8x8 latent: every query attends to key 5 (grid row 1, col 1)
    scores = torch.zeros(2, 16, 16)
    scores[:, :, 5] = 1.0
    x0 = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    out = guidance.sag_blur_map(x0, scores, 2.0, 1.0)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:4] = True  # the key's grid cell, upsampled by 2 (nearest)
    blurred = guidance.gaussian_blur(x0, 9, 2.0)
    assert torch.equal(out[..., mask], blurred[..., mask])
    assert torch.equal(out[..., ~mask], x0[..., ~mask])


def test_self_attention_guidance_node(runner):
    base = _latent(runner.run(txt2img()), "3")
    outs = {}
    for scale in (0.0, 0.5):
        prompt = txt2img()
        prompt["30"] = {"class_type": "SelfAttentionGuidance", "inputs": {"model": ["4", 0], "scale": scale,
                                                                          "blur_sigma": 2.0}}
        prompt["3"]["inputs"]["model"] = ["30", 0]
        outs[scale] = _latent(runner.run(prompt), "3")
    # scale 0: plain CFG, but the recorded attention is computed with an explicit softmax (not the fused kernel)
    torch.testing.assert_close(outs[0.0], base, rtol=1e-5, atol=1e-3)
    assert torch.isfinite(outs[0.5]).all() and not torch.allclose(outs[0.5], base, atol=1e-2)
