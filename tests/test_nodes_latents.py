"""ComfyUI's latent nodes against hand-worked cases; tiled VAE against the untiled VAE on the demo VAE."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph.engine import Folders, NodeContext, Runtime
from nodegraph_nodes.core import latents as lt

ROOT = Path(__file__).resolve().parent.parent


def lat(b=1, c=4, h=8, w=8, start=0.0, **extra):
    x = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w) + start
    return {"samples": x, **extra}


def test_composite_plain_and_feathered():
    to, src = lat(h=6, w=6), {"samples": torch.full((1, 4, 4, 4), -1.0)}
    out = lt.LatentComposite().execute(to, src, 16, 8, 0)[0]["samples"]
    expected = to["samples"].clone()
    expected[:, :, 1:5, 2:6] = -1
    assert torch.equal(out, expected)
    # feather 16 px = 2 cells: edges inside the target ramp 0.5, 1; at (8, 8) px all four edges are inside
    out = lt.LatentComposite().execute(to, src, 8, 8, 16)[0]["samples"]
    ramp = torch.tensor([0.5, 1.0, 1.0, 0.5])
    mask = ramp[:, None] * ramp[None, :]
    region = to["samples"][:, :, 1:5, 1:5]
    assert torch.allclose(out[:, :, 1:5, 1:5], -1 * mask + region * (1 - mask))
    assert torch.equal(out[:, :, 0], to["samples"][:, :, 0])
    # at (16, 16) px the paste reaches the right and bottom border: no feather there
    out = lt.LatentComposite().execute(to, src, 16, 16, 16)[0]["samples"]
    ramp = torch.tensor([0.5, 1.0, 1.0, 1.0])
    mask = ramp[:, None] * ramp[None, :]
    region = to["samples"][:, :, 2:6, 2:6]
    assert torch.allclose(out[:, :, 2:6, 2:6], -1 * mask + region * (1 - mask))


def test_composite_masked_and_blend():
    dst, src = {"samples": torch.zeros(2, 4, 4, 4)}, {"samples": torch.ones(1, 4, 2, 2)}
    out = lt.LatentCompositeMasked().execute(dst, src, 16, 0, False)[0]["samples"]
    assert out[:, :, 0:2, 2:4].eq(1).all() and out.sum() == 2 * 4 * 4  # source repeated to the batch
    half = lt.LatentCompositeMasked().execute(dst, src, 0, 0, True, torch.full((8, 8), 0.25))[0]["samples"]
    assert torch.allclose(half, torch.full_like(half, 0.25))
    a, b = lat(), lat(start=100.0)
    blended = lt.LatentBlend().execute(a, b, 0.3)[0]["samples"]
    assert torch.allclose(blended, a["samples"] * 0.3 + b["samples"] * 0.7)


def test_from_batch_repeat_batch_keep_noise_positions():
    x = lat(b=4, noise_mask=torch.rand(4, 1, 8, 8))
    part = lt.LatentFromBatch().execute(x, 1, 2)[0]
    assert torch.equal(part["samples"], x["samples"][1:3]) and part["batch_index"] == [1, 2]
    assert torch.equal(part["noise_mask"], x["noise_mask"][1:3])
    again = lt.LatentFromBatch().execute(part, 1, 5)[0]
    assert again["batch_index"] == [2] and torch.equal(again["samples"], x["samples"][2:3])
    rep = lt.RepeatLatentBatch().execute(part, 3)[0]
    assert rep["samples"].shape[0] == 6 and rep["batch_index"] == [1, 2, 3, 4, 5, 6]
    joined = lt.LatentBatch().execute(part, lat(h=4, w=4))[0]
    assert joined["samples"].shape == (3, 4, 8, 8) and joined["batch_index"] == [1, 2, 0]
    fixed = lt.LatentBatchSeedBehavior().execute(joined, "fixed")[0]
    assert fixed["batch_index"] == [1, 1, 1]
    assert "batch_index" not in lt.LatentBatchSeedBehavior().execute(joined, "random")[0]
    assert "batch_index" in joined  # inputs are never changed


def test_rotate_flip_crop():
    x = lat(h=8, w=16)
    rotated = lt.LatentRotate().execute(x, "90 degrees")[0]["samples"]
    assert rotated.shape == (1, 4, 16, 8)
    assert torch.equal(rotated[0, :, 0, -1], x["samples"][0, :, 0, 0])  # clockwise
    assert torch.equal(lt.LatentFlip().execute(x, "x-axis: vertically")[0]["samples"][0, :, 0],
                       x["samples"][0, :, -1])
    assert torch.equal(lt.LatentFlip().execute(x, "y-axis: horizontally")[0]["samples"][0, :, :, 0],
                       x["samples"][0, :, :, -1])
    crop = lt.LatentCrop().execute(x, 64, 64, 120, 0)[0]["samples"]
    assert torch.equal(crop, x["samples"][:, :, 0:8, 8:16])  # x clamped to 8 cells from the right


def test_arithmetic_and_interpolate():
    a, b = lat(), lat(start=1.0)
    assert torch.equal(lt.LatentAdd().execute(a, b)[0]["samples"], a["samples"] + b["samples"])
    assert torch.equal(lt.LatentSubtract().execute(a, b)[0]["samples"], torch.full((1, 4, 8, 8), -1.0))
    assert torch.equal(lt.LatentMultiply().execute(a, -2.0)[0]["samples"], a["samples"] * -2)
    small = {"samples": torch.ones(1, 4, 4, 4)}  # resized (bilinear) and added everywhere
    assert torch.allclose(lt.LatentAdd().execute(a, small)[0]["samples"], a["samples"] + 1)
    # per pixel: directions (1,0,0,0) and (0,1,0,0), lengths 2 and 4, ratio 0.25
    p = {"samples": torch.tensor([2.0, 0, 0, 0]).reshape(1, 4, 1, 1).expand(1, 4, 2, 2).clone()}
    q = {"samples": torch.tensor([0, 4.0, 0, 0]).reshape(1, 4, 1, 1).expand(1, 4, 2, 2).clone()}
    mixed = lt.LatentInterpolate().execute(p, q, 0.25)[0]["samples"][0, :, 0, 0]
    direction = torch.tensor([0.25, 0.75, 0, 0]) / (0.25**2 + 0.75**2) ** 0.5
    assert torch.allclose(mixed, direction * (2 * 0.25 + 4 * 0.75))
    assert torch.allclose(lt.LatentInterpolate().execute(p, q, 1.0)[0]["samples"], p["samples"])


@pytest.fixture
def context(tmp_path):
    env = Folders(models_dirs=[tmp_path], input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                  temp_dir=tmp_path / "tmp")
    return NodeContext(node_id="5", prompt_id="p", runtime=Runtime(env), prompt={"5": {"class_type": "SaveLatent"}})


def test_save_and_load_latent_files(context, tmp_path):
    x = lat(b=2)
    node = lt.SaveLatent()
    node.context = context
    result = node.execute(x, "latents/run")
    assert result.ui == {"latents": [{"filename": "run_00001_.latent", "subfolder": "latents", "type": "output"}]}
    path = tmp_path / "out/latents/run_00001_.latent"
    tensors = load_file(path)
    assert set(tensors) == {"latent_tensor", "latent_format_version_0"}
    (tmp_path / "in").mkdir()
    path.rename(tmp_path / "in/run.latent")
    save_file({"latent_tensor": torch.ones(1, 4, 2, 2)}, tmp_path / "in/old.latent")  # before the version marker
    assert lt.LoadLatent.inputs["latent"].choices(context.env) == ["old.latent", "run.latent"]
    loader = lt.LoadLatent()
    loader.context = context
    assert torch.equal(loader.execute("run.latent")[0]["samples"], x["samples"])
    assert torch.allclose(loader.execute("old.latent")[0]["samples"], torch.full((1, 4, 2, 2), 1 / 0.18215))
    assert "not in the input folder" in lt.LoadLatent.check_inputs(context.env, latent="nope.latent")["latent"]
    (tmp_path / "in/bad.latent").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a safetensors latent file"):
        loader.execute("bad.latent")


@pytest.fixture(scope="module")
def demo_runtime():
    return Runtime(Folders(settings={"device": "cpu"}))


@pytest.fixture(scope="module")
def demo_vae(demo_runtime):
    from nodegraph_nodes.diffusion import ops

    return ops.load_vae(demo_runtime, ROOT / "demo_models/vae/nodegraph-demo-vae.safetensors")


def _in(runtime, node):
    """The node with a context on `runtime` (the model cache holding the demo VAE)."""
    node.context = NodeContext(node_id="1", prompt_id="p", runtime=runtime)
    return node


def test_tiled_scale_blends_tiles_exactly_for_a_local_function():
    """For a function without spatial context (each output pixel depends on its own input pixel only), every tile
    agrees with the whole on its overlap, so the feathered blend must give the untiled result exactly."""
    from nodegraph_nodes.core.tiled_vae import _three_tilings, tiled_scale

    x = torch.randn(2, 4, 20, 28)

    def up(z):  # 8x nearest upscaling and a channel mix: a stand-in decoder with no spatial context
        return torch.nn.functional.interpolate(z[:, :3] * 2 + z[:, 3:], scale_factor=8, mode="nearest")

    whole = up(x)
    assert torch.allclose(tiled_scale(x, up, (8, 8), 2, 8, 3), whole, atol=1e-6)
    assert torch.allclose(_three_tilings(x, up, 8, 8, 2, 8, 3), whole, atol=1e-6)

    def down(z):  # 8x average pooling: a stand-in encoder
        return torch.nn.functional.avg_pool2d(z, 8)

    pixels = torch.randn(1, 3, 96, 160)
    assert torch.allclose(_three_tilings(pixels, down, 64, 64, 16, 1 / 8, 3), down(pixels), atol=1e-6)


def test_tiled_vae_close_to_untiled_on_the_demo_vae(demo_runtime, demo_vae):
    """Tiling changes what each VAE output pixel sees (the VAE's mid-block attention is global), so tiled output
    is not equal to untiled. Measured on the demo VAE, a 256x256 grid of 16 data-set pictures, tile 128 px with
    32 px overlap: decode mean |diff| 0.021 (of the 0..1 range), encode mean |diff| 12% of the mean |latent|. The
    stated tolerances: decode < 0.03, encode < 0.15; a tile covering the whole picture gives the untiled result."""
    from nodegraph_demo.dataset import sample
    from nodegraph_nodes.diffusion import ops

    pictures = [torch.from_numpy(sample(i).image).float()[None] / 255 for i in range(16)]
    grid = torch.cat([torch.cat(pictures[4 * r:4 * r + 4], dim=2) for r in range(4)], dim=1)  # 256 x 256
    latent = ops.vae_encode(demo_runtime, demo_vae, grid)
    tiled_latent = _in(demo_runtime, lt.VAEEncodeTiled()).execute(grid, demo_vae, 128, 32)[0]["samples"]
    assert tiled_latent.shape == latent.shape
    latent_err = (tiled_latent - latent).abs().mean() / latent.abs().mean()
    assert latent_err < 0.15, float(latent_err)
    image = ops.vae_decode(demo_runtime, demo_vae, latent)
    tiled = _in(demo_runtime, lt.VAEDecodeTiled()).execute({"samples": latent}, demo_vae, 128, 32)[0]
    assert tiled.shape == image.shape == (1, 256, 256, 3)
    assert float((tiled - image).abs().mean()) < 0.03
    whole = _in(demo_runtime, lt.VAEDecodeTiled()).execute({"samples": latent[:, :, :8, :8]}, demo_vae, 512, 64)[0]
    assert torch.allclose(whole, ops.vae_decode(demo_runtime, demo_vae, latent[:, :, :8, :8]), atol=1e-5)
