"""Upscale models: tiny ESRGAN files (.safetensors and Real-ESRGAN-style .pth) through spandrel, tiling, the OOM
fallback and the nodes. The reference for the model's output is our own ESRGAN module (nodegraph_testmodels/upscale.py) holding
the same weights, independent of spandrel's implementation."""
from __future__ import annotations

import os
import pickle
import sys

import pytest
import torch

from nodegraph_testmodels.upscale import tiny_esrgan, write_esrgan_files
from nodegraph_nodes.diffusion.upscale import (
    UpscaleModelError,
    load_upscale_model,
    spandrel_module,
    tiled_scale,
    upscale_image,
)
from nodegraph_nodes.diffusion.weights_files import WeightsFileError

try:
    spandrel_module()
except UpscaleModelError as missing:  # spandrel is installed without its dependencies, see the README
    pytest.skip(str(missing), allow_module_level=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upscale_models")
    models = {4: tiny_esrgan(3, 4), 2: tiny_esrgan(4, 2)}
    paths = {}
    for scale, model in models.items():
        paths.update(write_esrgan_files(model, folder, f"x{scale}"))
    return models, paths


@pytest.mark.parametrize("name", ["x4", "x4_pth", "x2", "x2_pth"])
def test_esrgan_files_load_through_spandrel_and_match_our_module(files, name):
    models, paths = files
    scale = int(name[1])
    descriptor = load_upscale_model(paths[name])
    assert descriptor.architecture.name == "ESRGAN" and descriptor.scale == scale
    image = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = models[scale](image).clamp(0, 1)
        ours = descriptor(image)
    assert ours.shape == (1, 3, 20 * scale, 28 * scale)
    assert (ours - expected).abs().max() <= 1e-5
    placeholder = sys.modules.get("torchvision")
    assert placeholder is None or getattr(placeholder, "__file__", None)  # the import-time stand-in is gone


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickles_are_read_only_by_the_weights_only_unpickler(tmp_path, monkeypatch):
    evil = tmp_path / "evil.pth"
    with evil.open("wb") as f:
        pickle.dump({"params_ema": {"conv_first.weight": _Payload()}}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsFileError):
        load_upscale_model(evil)
    assert not (tmp_path / "pwned").exists()


def test_tiled_equals_untiled_within_the_overlap_blend(files):
    """ComfyUI's tiling blends overlapping tiles; a tile's border pixels see zero padding instead of their
    neighbours, so tiled and untiled differ a little where tiles meet. Measured on the random x4 model with 32 px
    tiles overlapping by 8 (the node uses 512 / 32): mean 1.6e-4, max 5.6e-3 (of 1); bounds 1e-3 / 2e-2."""
    _, paths = files
    descriptor = load_upscale_model(paths["x4"])
    image = torch.rand(1, 3, 72, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = descriptor(image)
        tiled = tiled_scale(image, descriptor, 4, tile=32, overlap=8)
    assert tiled.shape == whole.shape
    difference = (tiled - whole).abs()
    assert difference.mean() <= 1e-3 and difference.max() <= 2e-2
    with torch.no_grad():  # one tile covering the image: identical
        assert torch.equal(tiled_scale(image, descriptor, 4, tile=80, overlap=8), whole)


def test_out_of_memory_halves_the_tile(files):
    _, paths = files
    descriptor = load_upscale_model(paths["x2"])
    seen = []

    class Limited:
        """The real model, made to run out of memory on inputs larger than 40 px (fault injection)."""

        model, scale, output_channels = descriptor.model, descriptor.scale, descriptor.output_channels

        def __call__(self, x):
            seen.append(max(x.shape[-2:]))
            if max(x.shape[-2:]) > 40:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return descriptor(x)

    image = torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(2))
    out = upscale_image(Limited(), image, tile=128, overlap=8, min_tile=16)
    assert max(seen) > 40 and seen[-1] <= 32  # tried 128, then 64, finished with 32
    with torch.no_grad():
        expected = tiled_scale(image.movedim(-1, 1), descriptor, 2, tile=32, overlap=8).movedim(1, -1)
    assert torch.equal(out, expected.clamp(0, 1))
    with pytest.raises(torch.OutOfMemoryError):
        upscale_image(Limited(), image, tile=128, overlap=8, min_tile=64)


def test_upscale_nodes_in_a_workflow(tmp_path):
    from PIL import Image

    from nodegraph_testmodels.files import make_tiny_models
    from support.sd import Runner, make_folders

    root = tmp_path / "models"
    make_tiny_models(root)
    folders = make_folders(tmp_path, root)
    folders.input_dir.mkdir(parents=True)
    Image.new("RGB", (40, 24), (200, 30, 30)).save(folders.input_dir / "small.png")
    runner = Runner(folders)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny_esrgan_x4.pth"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    result = runner.run(prompt)
    assert result.values["3"][0].shape == (1, 96, 160, 3)
    info = runner.registry.get("UpscaleModelLoader").object_info(folders)
    assert "tiny_esrgan_x4.pth" in info["input"]["required"]["model_name"][0]
    assert info["output"] == ["UPSCALE_MODEL"] and info["category"] == "loaders"
