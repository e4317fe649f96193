"""Hardening of model work (issue 17, item 3): work too large for the device is refused before it starts, saying
what would fit, and an interrupt stops a UNet call half-way, between its blocks."""
from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from nodegraph.engine import Interrupted
from nodegraph_nodes.diffusion.denoiser import interruptible
from nodegraph_nodes.diffusion.memory import WorkTooLarge, check_unet_fits, unet_call_bytes
from support.sd import Runner, make_folders
from support.workflows import txt2img


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8).eval()


def test_an_oversized_txt2img_is_refused_before_sampling(tmp_path, models_root):
    folders = make_folders(tmp_path, models_root)
    folders.settings["work_memory_budget"] = 64 << 20  # a small device, so the test needs no big machine
    runner = Runner(folders)
    run = runner.run(txt2img(**{"5.width": 4096, "5.height": 4096}))
    assert run.status == "error"
    assert run.error["node_id"] == "3" and run.error["node_type"] == "KSampler"
    message = run.error["exception_message"]
    assert "sampling 4096x4096 at batch 1 needs about" in message and "what fits is about 704x704" in message
    assert run.error["exception_type"].endswith("WorkTooLarge")
    assert "3" not in run.executed  # refused before any step
    assert runner.run(txt2img()).status == "success"  # 64x64 fits the same budget


def test_the_estimate_grows_with_the_area_and_cfg():
    unet = tiny_unet()
    one = unet_call_bytes(unet, (1, 4, 8, 8), 1)
    assert unet_call_bytes(unet, (1, 4, 16, 16), 1) == 4 * one
    assert unet_call_bytes(unet, (1, 4, 8, 8), 2) == 2 * one == unet_call_bytes(unet, (2, 4, 8, 8), 1)
    check_unet_fits(unet, (1, 4, 8, 8), 7.0, {"work_memory_budget": 2 * one})
    with pytest.raises(WorkTooLarge, match="at batch 1"):
        check_unet_fits(unet, (1, 4, 8, 8), 7.0, {"work_memory_budget": 2 * one - 1})
    check_unet_fits(unet, (1, 4, 8, 8), 1.0, {"work_memory_budget": one})  # cfg 1: no unconditional rows


def test_an_interrupt_stops_a_unet_call_between_its_blocks():
    unet = tiny_unet()
    calls, checks = [], []
    unet.register_forward_pre_hook(lambda module, args: calls.append(1))

    def check() -> None:
        checks.append(1)
        if len(checks) == 3:  # the user pressed stop while the first call was in its second down block
            raise Interrupted("interrupted")

    x = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 77, 32)
    with interruptible(unet, check), torch.no_grad():
        with pytest.raises(Interrupted):
            unet(x, torch.tensor([500]), encoder_hidden_states=context)
    assert len(calls) == 1 and len(checks) == 3
    # Outside the context the hooks are gone: the model runs as before.
    with torch.no_grad():
        unet(x, torch.tensor([500]), encoder_hidden_states=context)
    assert len(checks) == 3
