"""The shipped demo checkpoints load like users' files, and a few training steps lower the loss."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from PIL import Image


from nodegraph_demo import checker, dataset, evaluate, train
from nodegraph_demo.checker import colour_name
from nodegraph_demo.evaluate import WorkflowRunner, sd1_txt2img
from nodegraph_nodes.diffusion import preview
from nodegraph_nodes.diffusion.families import FAMILIES
from nodegraph_nodes.diffusion.checkpoint_files import SingleFile, read_checkpoint_file, read_controlnet_file
from nodegraph_nodes.diffusion.tiny import build_vae

MODELS = Path(__file__).resolve().parents[1] / "demo_models"
CHECKPOINTS = {"sd1": "sd1", "sdxl": "sdxl", "sdxl_refiner": "sdxl_refiner"}


@pytest.mark.parametrize("family", ["sd1", "sdxl", "sdxl_refiner"])
def test_shipped_checkpoint_loads_with_its_family(family: str) -> None:
    path = MODELS / train.CHECKPOINT_NAMES[family]
    components = read_checkpoint_file(path, dtype=torch.float32)
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
    controlnet = read_controlnet_file(MODELS / train.CHECKPOINT_NAMES["controlnet"], dtype=torch.float32)
    assert isinstance(controlnet, ControlNetModel)
    sd1 = read_checkpoint_file(MODELS / train.CHECKPOINT_NAMES["sd1"], dtype=torch.float32)
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


def test_fit_latent_rgb_recovers_a_linear_map() -> None:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(6, 4, 8, 8, generator=generator)
    factors = torch.randn(4, 3, generator=generator) * 0.3
    bias = torch.tensor([0.1, -0.2, 0.05])
    rgb = torch.einsum("nchw,cr->nrhw", latents, factors) + bias[None, :, None, None]
    images = rgb.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # each latent pixel an 8x8 block
    fitted, fitted_bias = preview.fit_latent_rgb(latents, images)
    assert torch.allclose(torch.tensor(fitted), factors, atol=1e-4)
    assert torch.allclose(torch.tensor(fitted_bias), bias, atol=1e-4)


@pytest.mark.parametrize("family", ["sd1", "sdxl", "sdxl_refiner"])
def test_demo_checkpoint_previews_show_the_decoded_colours(family: str) -> None:
    components = read_checkpoint_file(MODELS / train.CHECKPOINT_NAMES[family], dtype=torch.float32)
    assert components.latent_rgb is not None  # fitted to its own VAE, stored in the header
    samples = list(dataset.samples(90_000, 16))
    pixels = torch.from_numpy(np.stack([s.image for s in samples]).astype(np.float32).transpose(0, 3, 1, 2))
    pixels = pixels / 127.5 - 1
    with torch.no_grad():
        latents = components.vae.encode(pixels).latent_dist.mean * components.vae.config.scaling_factor
    target = torch.nn.functional.adaptive_avg_pool2d(pixels, 8)

    def error(fitted) -> float:
        previews = [preview.latent_to_rgb(z[None], "sdxl" if family != "sd1" else "sd1", fitted) for z in latents]
        rgb = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in previews]) / 127.5 - 1
        return float((rgb - target).abs().mean())

    own, published = error(components.latent_rgb), error(None)
    assert own < 0.25 and own < published / 2, (own, published)  # of 2 (the [-1, 1] range): 0.17 vs 0.45


def test_sampling_previews_of_the_demo_model_use_its_own_factors(tmp_path: Path) -> None:
    runner = WorkflowRunner(MODELS, tmp_path, {"device": "cpu"})
    events: list = []
    workflow = sd1_txt2img("a blue square", 3)
    result = runner.run(workflow, "t", on_event=lambda e, d: events.append((e, d)))
    assert result.ok
    previews = [d["image"] for e, d in events if e == "preview"]
    assert len(previews) == workflow["3"]["inputs"]["steps"]
    (saved,) = [item for ui in result.outputs.values() for item in ui["images"]]
    final = np.asarray(Image.open(runner.folders.output_dir / saved["filename"]).convert("RGB").resize((8, 8), Image.BOX))
    last = np.asarray(previews[-1])
    assert last.shape == (8, 8, 3)
    # where the picture is most saturated (the square), the preview shows the same named colour: blue
    saturation = final.max(axis=2).astype(int) - final.min(axis=2)
    y, x = np.unravel_index(np.argmax(saturation), saturation.shape)
    assert colour_name(final[y, x] / 255.0) == "blue"
    assert colour_name(last[y, x] / 255.0) == "blue", (final[y, x], last[y, x])


def test_shipped_vae_keeps_the_shapes_of_two_object_scenes() -> None:
    # the smallest shapes of the data set: an 8x VAE that rounds them off caps every model's shape adherence
    pairs = [s for s in dataset.samples(0, 400, "held_out") if len(s.objects) == 2][:24]
    assert len(pairs) == 24
    decoded = evaluate.vae_round_trip(MODELS, [s.image for s in pairs])
    scores = [checker.score(image, s.caption) for image, s in zip(decoded, pairs, strict=True)]
    assert np.mean([sc.shape and sc.colour and sc.count for sc in scores]) >= 0.9
