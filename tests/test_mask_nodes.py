"""The mask and outpainting nodes against ComfyUI's formulas written out (loops, scipy), and their declarations."""
from __future__ import annotations

import pytest
import torch

from nodegraph.engine import default_registry
from nodegraph_nodes.sd import inpaint as inpaint_nodes
from nodegraph_nodes.sd import masks

scipy_ndimage = pytest.importorskip("scipy.ndimage")


def _run(node_cls, **inputs):
    return node_cls().execute(**inputs)


def _mask(seed=0, shape=(2, 9, 11)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("expand", [3, -2, 0])
@pytest.mark.parametrize("tapered", [True, False])
def test_grow_mask_equals_scipy_grey_morphology(expand, tapered):
    import numpy as np

    mask = (_mask() > 0.7).float() * _mask(1)
    c = 0 if tapered else 1
    footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
    expected = []
    for m in mask.numpy():
        for _ in range(abs(expand)):
            op = scipy_ndimage.grey_erosion if expand < 0 else scipy_ndimage.grey_dilation
            m = op(m, footprint=footprint)
        expected.append(torch.from_numpy(m))
    (ours,) = _run(masks.GrowMask, mask=mask, expand=expand, tapered_corners=tapered)
    assert torch.equal(ours, torch.stack(expected))


def test_feather_mask_follows_comfyui_indexing():
    mask = torch.ones(1, 6, 8)
    (ours,) = _run(masks.FeatherMask, mask=mask, left=2, top=1, right=3, bottom=2)
    expected = mask.clone()
    for x in range(2):
        expected[:, :, x] *= (x + 1) / 2
    for x in range(3):
        expected[:, :, -x] *= (x + 1) / 3  # -0 is column 0, as in ComfyUI
    for y in range(1):
        expected[:, y, :] *= (y + 1) / 1
    for y in range(2):
        expected[:, -y, :] *= (y + 1) / 2
    assert torch.equal(ours, expected)
    assert ours[0, 3, 0] == pytest.approx(0.5 * (1 / 3))  # left feather times the right edge's -0 factor


@pytest.mark.parametrize("operation", ["multiply", "add", "subtract", "and", "or", "xor"])
def test_mask_composite(operation):
    destination, source = _mask(0, (1, 6, 7)), _mask(1, (1, 4, 5))
    (ours,) = _run(masks.MaskComposite, destination=destination, source=source, x=4, y=3, operation=operation)
    expected = destination.clone()
    d, s = destination[:, 3:6, 4:7], source[:, :3, :3]  # clipped at the destination's edge
    result = {
        "multiply": d * s, "add": d + s, "subtract": d - s,
        "and": (d.round().bool() & s.round().bool()).float(),
        "or": (d.round().bool() | s.round().bool()).float(),
        "xor": (d.round().bool() ^ s.round().bool()).float(),
    }[operation]
    expected[:, 3:6, 4:7] = result
    assert torch.equal(ours, expected.clamp(0, 1))


def test_simple_mask_nodes():
    mask = _mask(0, (1, 5, 6))
    assert torch.equal(_run(masks.InvertMask, mask=mask)[0], 1 - mask)
    assert torch.equal(_run(masks.ThresholdMask, mask=mask, value=0.4)[0], (mask > 0.4).float())
    assert torch.equal(_run(masks.CropMask, mask=mask[0], x=1, y=2, width=3, height=9)[0], mask[:, 2:, 1:4])
    solid = _run(masks.SolidMask, value=0.25, width=4, height=3)[0]
    assert solid.shape == (1, 3, 4) and bool((solid == 0.25).all())
    image = _run(masks.MaskToImage, mask=mask)[0]
    assert image.shape == (1, 5, 6, 3) and torch.equal(image[..., 2], mask)
    assert torch.equal(_run(masks.ImageToMask, image=image * torch.tensor([1.0, 0.5, 0.25]), channel="green")[0],
                       mask * 0.5)


def test_image_pad_for_outpaint_equals_comfyui_loop():
    image = torch.rand(1, 20, 24, 3, generator=torch.Generator().manual_seed(0))
    left, top, right, bottom, feathering = 8, 0, 16, 8, 6
    canvas, mask = _run(inpaint_nodes.ImagePadForOutpaint, image=image, left=left, top=top, right=right,
                        bottom=bottom, feathering=feathering)
    d2, d3 = 20, 24
    assert canvas.shape == (1, 28, 48, 3) and bool((canvas[:, 20:, :, :] == 0.5).all())
    assert torch.equal(canvas[:, :20, 8:32], image)
    expected = torch.ones(28, 48)
    t = torch.zeros(d2, d3)
    for i in range(d2):
        for j in range(d3):
            dt = i if top != 0 else d2
            db = d2 - i if bottom != 0 else d2
            dl = j if left != 0 else d3
            dr = d3 - j if right != 0 else d3
            d = min(dt, db, dl, dr)
            if d < feathering:
                v = (feathering - d) / feathering
                t[i, j] = v * v
    expected[top:top + d2, left:left + d3] = t
    assert torch.allclose(mask[0], expected, atol=1e-6)


def test_load_image_mask_channels(tmp_path):
    import numpy as np
    from PIL import Image

    from nodegraph_nodes.diffusion.image_ops import load_mask_channel

    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 64
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert torch.allclose(load_mask_channel(tmp_path / "a.png", "alpha"), torch.full((1, 4, 5), 1 - 64 / 255))
    assert torch.equal(load_mask_channel(tmp_path / "a.png", "red"), torch.ones(1, 4, 5))
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "b.png")
    assert torch.equal(load_mask_channel(tmp_path / "b.png", "alpha"), torch.zeros(1, 4, 5))  # opaque


def test_declarations_are_comfyuis():
    info = {name: default_registry().get(name).object_info() for name in (
        "VAEEncodeForInpaint", "ImagePadForOutpaint", "GrowMask", "DifferentialDiffusion", "LoadImageMask",
        "SetLatentNoiseMask")}
    assert info["VAEEncodeForInpaint"]["input"]["required"]["grow_mask_by"] == [
        "INT", {"default": 6, "min": 0, "max": 64, "step": 1}]
    assert list(info["VAEEncodeForInpaint"]["input"]["required"]) == ["pixels", "vae", "mask", "grow_mask_by"]
    assert info["ImagePadForOutpaint"]["input"]["required"]["feathering"][1]["default"] == 40
    assert info["ImagePadForOutpaint"]["output"] == ["IMAGE", "MASK"]
    assert info["GrowMask"]["input"]["required"]["tapered_corners"] == ["BOOLEAN", {"default": True}]
    assert info["DifferentialDiffusion"]["input"]["optional"]["strength"][1]["default"] == 1.0
    assert info["DifferentialDiffusion"]["category"] == "_for_testing"
    assert info["LoadImageMask"]["input"]["required"]["channel"][0] == ["alpha", "red", "green", "blue"]
    assert info["SetLatentNoiseMask"]["category"] == "latent/inpaint"
