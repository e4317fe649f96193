"""The shipped demo checkpoints load like users' files, and a few training steps lower the loss."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

from nodegraph_nodes.demo import dataset, train
from nodegraph_nodes.diffusion.families import FAMILIES
from nodegraph_nodes.diffusion.loader import SingleFile, load_checkpoint, load_controlnet
from nodegraph_nodes.diffusion.tiny import build_vae

MODELS = Path(__file__).resolve().parents[1] / "demo_models"
CHECKPOINTS = {"sd1": "sd1", "sdxl": "sdxl", "sdxl_refiner": "sdxl_refiner"}


@pytest.mark.parametrize("family", ["sd1", "sdxl", "sdxl_refiner"])
def test_shipped_checkpoint_loads_with_its_family(family: str) -> None:
    path = MODELS / train.CHECKPOINT_NAMES[family]
    components = load_checkpoint(path, dtype=torch.float32)
    assert components.family == family
    assert isinstance(components.unet, UNet2DConditionModel) and isinstance(components.vae, AutoencoderKL)
    assert len(components.text_encoders) == len(FAMILIES[family].text_encoders)
    # the family's standard latent scale is right for the shipped VAE (its latents were rescaled to fit it)
    assert components.vae.config.scaling_factor == FAMILIES[family].latent_scale
    assert all(p.dtype == torch.float32 for m in components.models() for p in m.parameters())
    # stored in the original single-file layout, fp16
    file = SingleFile(path)
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in file.shapes)
    assert any(k.startswith("first_stage_model.decoder.up.") for k in file.shapes)
    assert file.tensors()["model.diffusion_model.out.2.weight"].dtype == torch.float16


def test_shipped_controlnet_loads_and_fits_the_sd1_unet() -> None:
    controlnet = load_controlnet(MODELS / train.CHECKPOINT_NAMES["controlnet"], dtype=torch.float32)
    assert isinstance(controlnet, ControlNetModel)
    sd1 = load_checkpoint(MODELS / train.CHECKPOINT_NAMES["sd1"], dtype=torch.float32)
    assert controlnet.config.cross_attention_dim == sd1.unet.config.cross_attention_dim
    # trained: the zero-initialised output convs are no longer zero, so the hint changes the result
    assert float(controlnet.controlnet_mid_block.weight.detach().abs().max()) > 0


def test_shipped_files_stay_small() -> None:
    sizes = [(MODELS / name).stat().st_size for name in train.CHECKPOINT_NAMES.values()]
    assert sum(sizes) < 50e6


def test_rescaled_vae_decodes_the_same_and_hits_unit_variance() -> None:
    vae = build_vae(train.DEMO_VAE, 0)
    x = torch.from_numpy(dataset.images_and_captions(0, 4)[0])
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        std = float(mean.std())
        scaled = train.rescaled_vae(vae, std, 0.13025)
        new_mean = scaled.encode(x).latent_dist.mean
        assert torch.allclose(new_mean * 0.13025, mean / std, atol=1e-4)
        assert torch.allclose(scaled.decode(new_mean).sample, vae.decode(mean).sample, atol=1e-4)


def test_a_few_training_steps_lower_the_loss() -> None:
    config = train.TrainConfig(batch=8, lr=2e-3, log_every=1, threads=torch.get_num_threads())
    components = train.demo_components("sd1", 0)
    components.vae = build_vae(train.DEMO_VAE, 1)  # untrained is fine: the test is about the UNet's loss
    images = np.stack([s.image for s in dataset.samples(0, 16)])
    pixels = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1
    mean, std = train.encode_images(components.vae, pixels)
    scale = float(mean.std())
    data = train.LatentData(mean / scale, std / scale, [dataset.sample(i).caption for i in range(16)], images)
    losses = train.train_diffusion("smoke", components, data, steps=12, config=config, log=lambda _: None)
    assert len(losses) == 12
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


def test_canny_hint_marks_the_object_outline() -> None:
    s = next(s for s in dataset.samples(0, 20) if len(s.objects) == 1)
    hint = train.canny_hint(s.image)
    assert hint.shape == (3, 64, 64) and set(np.unique(hint)) <= {0.0, 1.0}
    edges = hint[0] > 0
    ys, xs = np.nonzero(s.objects[0].mask)
    # every edge pixel lies on the object's border region, none far out in the smooth background
    near = np.zeros_like(edges)
    near[max(ys.min() - 2, 0):ys.max() + 3, max(xs.min() - 2, 0):xs.max() + 3] = True
    assert edges.any() and not (edges & ~near).any()
