"""GITSScheduler and OptimalStepsScheduler against hand-derived cases: rows of the published tables (the numbers
below are typed from the papers' tables as ComfyUI lists them, not read from our data file), ComfyUI's denoise and
rounding rules, and the log-linear resampling worked out point by point."""
from __future__ import annotations

import math

import pytest
import torch

from nodegraph.engine import default_registry
from nodegraph_nodes.diffusion import schedule_tables
from nodegraph_nodes.sd.table_schedulers import GITSScheduler, OptimalStepsScheduler

F32 = dict(rel=0, abs=0)  # float32 values are compared exactly, through torch.float32 rounding

GITS_120_10 = [14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381, 0.32104823,
               0.19894916, 0.09824532, 0.02916753]
GITS_120_20 = [14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.19988537, 1.61558151, 1.24153244, 0.95350921,
               0.74807048, 0.59516323, 0.50118381, 0.41087446, 0.34370604, 0.29807833, 0.25053367, 0.22545385,
               0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753]
FLUX = [0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001]


def f32(values) -> list[float]:
    return torch.tensor(values, dtype=torch.float32).tolist()


def gits(coeff, steps, denoise=1.0):
    return GITSScheduler().execute(coeff, steps, denoise)[0]


def optimal(model_type, steps, denoise=1.0):
    return OptimalStepsScheduler().execute(model_type, steps, denoise)[0]


def test_gits_rows_for_2_to_20_steps_are_the_published_schedules_ending_in_zero():
    sigmas = gits(1.20, 10)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (11,)
    assert sigmas.tolist() == f32(GITS_120_10[:-1] + [0.0])
    assert gits(0.80, 2).tolist() == f32([14.61464119, 7.49001646, 0.0])
    assert gits(1.50, 3).tolist() == f32([14.61464119, 0.803307, 0.25053367, 0.0])
    assert gits(1.20, 20).tolist() == f32(GITS_120_20[:-1] + [0.0])
    # the coefficient is rounded to two decimals, as ComfyUI looks it up (a float widget may send 1.2000000001)
    assert gits(1.2000000001, 10).tolist() == sigmas.tolist()


def test_gits_table_has_every_coefficient_and_step_count():
    levels = schedule_tables.gits_levels()
    assert list(levels) == [f"{0.80 + 0.05 * i:.2f}" for i in range(15)]
    for rows in levels.values():
        assert [len(row) for row in rows] == list(range(3, 22))
        for row in rows:
            assert row[0] == 14.61464119 and row[-1] == 0.02916753  # SD1's sigma_max and sigma_min
            assert all(a > b for a, b in zip(row, row[1:]))


def test_gits_beyond_20_steps_resamples_the_20_step_row_log_linearly():
    # 25 steps: 26 points over the 21 of the 20-step row; point k sits at row position 20k/25 = 0.8k
    sigmas = gits(1.20, 25)
    assert len(sigmas) == 26 and sigmas[-1] == 0
    for k in range(25):
        position = 0.8 * k
        low = math.floor(position + 1e-9)
        frac = position - low
        upper = GITS_120_20[min(low + 1, 20)]
        expected = math.exp((1 - frac) * math.log(GITS_120_20[low]) + frac * math.log(upper))
        assert sigmas[k].item() == pytest.approx(expected, rel=1e-6), k
    # whole positions (k = 0, 5, 10, 15, 20) land on the table's own values
    assert [sigmas[k].item() for k in (0, 5, 10, 15, 20)] == f32([GITS_120_20[i] for i in (0, 4, 8, 12, 16)])


def test_gits_denoise_keeps_the_last_round_steps_times_denoise_steps():
    assert gits(1.20, 10, 0.5).tolist() == f32(GITS_120_10[-6:-1] + [0.0])  # 5 steps: 6 sigmas
    # round(2.5) is 2 in Python (halves to even), as in ComfyUI: 2 steps, 3 sigmas
    assert gits(1.20, 10, 0.25).tolist() == f32(GITS_120_10[-3:-1] + [0.0])
    assert gits(1.20, 10, 0.35).tolist() == f32(GITS_120_10[-5:-1] + [0.0])  # round(3.5) = 4
    assert gits(1.20, 10, 0.0).shape == (0,)
    assert gits(1.20, 2, 0.2).tolist() == [0.0]  # round(0.4) = 0 steps: the last sigma alone, set to 0


def test_gits_refuses_a_coefficient_without_a_table():
    with pytest.raises(ValueError, match=r"GITSScheduler: coeff must be one of 0\.80, 0\.85.*1\.50.*got 1\.23"):
        gits(1.23, 10)


def test_optimal_steps_table_length_gives_the_table_itself():
    assert optimal("FLUX", 10).tolist() == f32(FLUX[:-1] + [0.0])
    wan = optimal("Wan", 20)
    assert len(wan) == 21 and wan[0].item() == 1.0 and wan[-2].item() == pytest.approx(0.208) and wan[-1] == 0
    chroma = optimal("Chroma", 40)
    assert len(chroma) == 41 and chroma[0].item() == pytest.approx(0.992) and chroma[-2].item() == pytest.approx(0.048)


def test_optimal_steps_resampling_by_hand():
    # FLUX's 11 levels to 21 points: even points are the table's, odd ones the geometric mean of their neighbours
    sigmas = optimal("FLUX", 20)
    assert len(sigmas) == 21 and sigmas[-1] == 0
    for k in range(20):
        if k % 2 == 0:
            expected = FLUX[k // 2]
        else:
            expected = math.sqrt(FLUX[k // 2] * FLUX[k // 2 + 1])
        assert sigmas[k].item() == pytest.approx(expected, rel=1e-6), k
    # fewer steps than the table: 5 steps take points at positions 0, 2, 4, 6, 8, 10
    assert optimal("FLUX", 5).tolist() == pytest.approx(FLUX[0:10:2] + [0.0], rel=1e-6)


def test_optimal_steps_denoise():
    assert optimal("FLUX", 10, 0.3).tolist() == f32(FLUX[-4:-1] + [0.0])
    assert optimal("FLUX", 10, 0.0).shape == (0,)
    with pytest.raises(ValueError, match="model_type must be one of FLUX, Wan, Chroma"):
        optimal("SD1", 10)


def test_loglinear_resample_keeps_the_ends_and_is_monotone():
    out = schedule_tables.loglinear_resample([10.0, 1.0, 0.1], 5)
    assert out.tolist() == pytest.approx([10.0, math.sqrt(10.0), 1.0, math.sqrt(0.1), 0.1], rel=1e-12)


def test_node_declarations_are_comfyuis():
    registry = default_registry()
    gits_info = registry.get("GITSScheduler").object_info()
    assert gits_info["category"] == "sampling/custom_sampling/schedulers"
    assert gits_info["input_order"]["required"] == ["coeff", "steps", "denoise"]
    assert gits_info["input"]["required"] == {
        "coeff": ["FLOAT", {"default": 1.2, "min": 0.8, "max": 1.5, "step": 0.05}],
        "steps": ["INT", {"default": 10, "min": 2, "max": 1000, "step": 1}],
        "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]}
    assert gits_info["output"] == ["SIGMAS"] and gits_info["output_name"] == ["SIGMAS"]
    optimal_info = registry.get("OptimalStepsScheduler").object_info()
    assert optimal_info["category"] == "sampling/custom_sampling/schedulers"
    assert optimal_info["input_order"]["required"] == ["model_type", "steps", "denoise"]
    assert optimal_info["input"]["required"] == {
        "model_type": [["FLUX", "Wan", "Chroma"], {"default": "FLUX"}],
        "steps": ["INT", {"default": 20, "min": 3, "max": 1000, "step": 1}],
        "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]}
    assert optimal_info["output"] == ["SIGMAS"]


def test_gits_sigmas_drive_sampler_custom_advanced(tmp_path):
    """A GITS schedule samples the tiny SD1 model through SamplerCustomAdvanced exactly as the same numbers typed
    into ManualSigmas do (the node's SIGMAS value is a plain schedule a sampler walks)."""
    from nodegraph_testmodels.files import make_tiny_models
    from support.sd import Runner, make_folders
    from support.workflows import txt2img

    models = tmp_path / "models"
    make_tiny_models(models)
    runner = Runner(make_folders(tmp_path, models))

    def prompt(sigmas_node):
        graph = txt2img()
        del graph["3"]
        graph["20"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}}
        graph["21"] = {"class_type": "CFGGuider", "inputs": {
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "cfg": 5.0}}
        graph["22"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
        graph["23"] = sigmas_node
        graph["24"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["20", 0], "guider": ["21", 0], "sampler": ["22", 0], "sigmas": ["23", 0],
            "latent_image": ["5", 0]}}
        graph["8"]["inputs"]["samples"] = ["24", 0]
        return graph

    gits_run = runner.run(prompt({"class_type": "GITSScheduler", "inputs": {"coeff": 1.2, "steps": 4, "denoise": 1.0}}))
    assert gits_run.status == "success", gits_run.error
    typed = ", ".join(repr(v) for v in gits(1.2, 4).tolist())
    manual_run = runner.run(prompt({"class_type": "ManualSigmas", "inputs": {"sigmas": typed}}))
    assert manual_run.status == "success", manual_run.error
    gits_latent, manual_latent = gits_run.values["24"][0]["samples"], manual_run.values["24"][0]["samples"]
    assert torch.isfinite(gits_latent).all()
    assert torch.equal(gits_latent, manual_latent)
