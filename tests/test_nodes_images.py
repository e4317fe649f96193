"""ComfyUI's core image nodes against hand-worked cases (formulas written out independently in the tests)."""
import io
import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nodegraph.engine import Folders, NodeContext, Runtime
from nodegraph_nodes.core import images as im
from nodegraph_nodes.core import outputs as out


def ramp(b=1, h=4, w=6):
    """An image whose pixels are distinct: value = (y * w + x) / (h * w), channel c adds c / 10."""
    base = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w, 1) / (h * w)
    img = base + torch.tensor([0.0, 0.1, 0.2])
    return img.repeat(b, 1, 1, 1).clamp(0, 1)


def test_scale_by_total_pixels_and_max_dimension_sizes():
    img = ramp(h=40, w=60)
    assert im.ImageScaleBy().execute(img, "bilinear", 1.5)[0].shape == (1, 60, 90, 3)
    # 0.01 MP = int(0.01 * 1048576) = 10485 pixels; factor sqrt(10485 / 2400) = 2.0901 -> 125 x 84
    assert im.ImageScaleToTotalPixels().execute(img, "area", 0.01)[0].shape == (1, 84, 125, 3)
    assert im.ImageScaleToMaxDimension().execute(img, "bilinear", 30)[0].shape == (1, 20, 30, 3)
    tall = ramp(h=60, w=40)
    assert im.ImageScaleToMaxDimension().execute(tall, "area", 30)[0].shape == (1, 30, 20, 3)
    # nearest-exact by 2 repeats each pixel
    doubled = im.ImageScaleBy().execute(ramp(), "nearest-exact", 2.0)[0]
    assert torch.equal(doubled[0, ::2, ::2], ramp()[0])


def test_invert_batch_from_batch_repeat():
    img = ramp(b=3)
    assert torch.allclose(im.ImageInvert().execute(img)[0], 1 - img)
    other = ramp(h=8, w=12)  # resized to 4 x 6 (bilinear, center) before joining
    joined = im.ImageBatch().execute(img, other)[0]
    assert joined.shape == (4, 4, 6, 3) and torch.equal(joined[:3], img)
    picked = im.ImageFromBatch().execute(joined, 1, 2)[0]
    assert torch.equal(picked, joined[1:3])
    assert torch.equal(im.ImageFromBatch().execute(joined, 9, 5)[0], joined[3:4])  # index and length clamp
    rep = im.RepeatImageBatch().execute(img[:1], 3)[0]
    assert rep.shape == (3, 4, 6, 3) and torch.equal(rep[2], img[0])


def test_crop_flip_rotate():
    img = ramp()
    crop = im.ImageCrop().execute(img, 3, 2, 2, 1)[0]
    assert torch.equal(crop, img[:, 1:3, 2:5])
    assert im.ImageCrop().execute(img, 10, 10, 100, 100)[0].shape == (1, 1, 1, 3)  # corner clamped inside
    assert torch.equal(im.ImageFlip().execute(img, "x-axis: vertically")[0][0, 0], img[0, -1])
    assert torch.equal(im.ImageFlip().execute(img, "y-axis: horizontally")[0][0, :, 0], img[0, :, -1])
    rotated = im.ImageRotate().execute(img, "90 degrees")[0]
    assert rotated.shape == (1, 6, 4, 3)
    # clockwise: the top-left pixel goes to the top-right, the bottom-left to the top-left
    assert torch.equal(rotated[0, 0, -1], img[0, 0, 0]) and torch.equal(rotated[0, 0, 0], img[0, -1, 0])
    assert torch.equal(im.ImageRotate().execute(img, "180 degrees")[0][0, 0, 0], img[0, -1, -1])
    assert torch.equal(im.ImageRotate().execute(img, "none")[0], img)


def test_composite_masked():
    dst = torch.zeros(1, 6, 8, 3)
    src = torch.ones(1, 4, 4, 3)
    # pasted at (6, 3): only a 2 x 3 part is visible
    result = im.ImageCompositeMasked().execute(dst, src, 6, 3, False)[0]
    expected = torch.zeros(1, 6, 8, 3)
    expected[:, 3:6, 6:8] = 1
    assert torch.equal(result, expected) and dst.sum() == 0  # the input is not changed
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # bilinear to 4 x 4 -> soft diagonal
    masked = im.ImageCompositeMasked().execute(dst, src, 0, 0, False, mask)[0]
    expected_mask = F.interpolate(mask[None, None], size=(4, 4), mode="bilinear")[0, 0]
    assert torch.allclose(masked[0, :4, :4, 0], expected_mask)
    resized = im.ImageCompositeMasked().execute(dst, src, 0, 0, True)[0]
    assert torch.equal(resized, torch.ones(1, 6, 8, 3))


@pytest.mark.parametrize("mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"])
def test_blend_modes_per_pixel(mode):
    a, b = np.float32(0.2), np.float32(0.7)
    blended = {
        "normal": b, "multiply": a * b, "screen": 1 - (1 - a) * (1 - b),
        "overlay": 2 * a * b,  # a <= 0.5
        "soft_light": a + (2 * b - 1) * (((16 * a - 12) * a + 4) * a - a),  # b > 0.5, a <= 0.25
        "difference": a - b,
    }[mode]
    expected = np.clip(a * 0.6 + blended * 0.4, 0, 1)
    got = im.ImageBlend().execute(torch.full((1, 2, 2, 3), 0.2), torch.full((1, 2, 2, 3), 0.7), 0.4, mode)[0]
    assert torch.allclose(got, torch.full_like(got, float(expected)), atol=1e-6)


def test_blur_and_sharpen():
    flat = torch.full((1, 5, 5, 3), 0.3)
    assert torch.allclose(im.ImageBlur().execute(flat, 2, 1.0)[0], flat, atol=1e-6)
    assert torch.allclose(im.ImageSharpen().execute(flat, 2, 1.0, 1.0)[0], flat, atol=1e-6)
    dot = torch.zeros(1, 7, 7, 3)
    dot[0, 3, 3] = 1.0
    blurred = im.ImageBlur().execute(dot, 1, 1.0)[0]
    # 3x3 kernel on a -1..1 grid: weights exp(-d^2 / 2) for d^2 in {0, 1, 2}, normalised
    w = np.exp(-np.array([[2, 1, 2], [1, 0, 1], [2, 1, 2]]) / 2.0)
    w /= w.sum()
    assert torch.allclose(blurred[0, 2:5, 2:5, 0], torch.tensor(w, dtype=torch.float32), atol=1e-6)
    assert float(blurred.sum()) == pytest.approx(3.0, abs=1e-5)  # energy kept away from the border
    sharp = im.ImageSharpen().execute(torch.full((1, 7, 7, 3), 0.5) + dot * 0.1, 1, 1.0, 0.5)[0]
    assert sharp[0, 3, 3, 0] > 0.6 and sharp[0, 2, 3, 0] < 0.5  # the bump grows, its surroundings dip


def test_quantize_reduces_colours():
    img = ramp(h=16, w=16)
    for dither in ("none", "floyd-steinberg", "bayer-4"):
        q = im.ImageQuantize().execute(img, 4, dither)[0]
        assert q.shape == img.shape
        assert len(torch.unique(q.reshape(-1, 3), dim=0)) <= 4
    assert torch.equal(im.ImageQuantize().execute(torch.full((1, 4, 4, 3), 128 / 255), 256, "none")[0],
                       torch.full((1, 4, 4, 3), 128 / 255))


def test_stitch():
    a = torch.zeros(1, 4, 6, 3)
    b = torch.ones(1, 2, 3, 3)
    right = im.ImageStitch().execute(a, "right", True, 0, "white", b)[0]
    assert right.shape == (1, 4, 12, 3)  # b scaled to height 4 -> width 6
    assert right[0, :, :6].sum() == 0 and torch.allclose(right[0, :, 6:], torch.ones(4, 6, 3), atol=0.02)
    up = im.ImageStitch().execute(a, "up", False, 2, "red", b)[0]
    assert up.shape == (1, 8, 6, 3)  # 2 (b, padded to width 6) + 2 spacer + 4
    assert torch.equal(up[0, 2, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(up[0, 0, 0], torch.tensor([1.0, 1.0, 1.0]) * 0.0)  # pad of a coloured spacer is black
    assert torch.equal(up[0, 0, 2], torch.ones(3))
    assert im.ImageStitch().execute(a, "right", True, 0, "white")[0] is a


def test_size_and_empty_image():
    assert im.GetImageSize().execute(ramp(b=2, h=4, w=6)) == (6, 4, 2)
    empty = im.EmptyImage().execute(3, 2, 2, 0xFF8000)[0]
    assert empty.shape == (2, 2, 3, 3)
    assert torch.allclose(empty[1, 1, 2], torch.tensor([1.0, 128 / 255, 0.0]))


@pytest.fixture
def context(tmp_path):
    env = Folders(models_dirs=[tmp_path], input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                  temp_dir=tmp_path / "tmp")
    events = []
    ctx = NodeContext(node_id="9", prompt_id="p", runtime=Runtime(env), prompt={"9": {"class_type": "X"}},
                      extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}},
                      report=lambda e, d: events.append((e, d)))
    ctx.events = events
    return ctx


def run_output(cls, context, **inputs):
    node = cls()
    node.context = context
    return node.execute(**inputs)


def test_save_animated_webp_and_png(context, tmp_path):
    frames = torch.stack([torch.full((8, 8, 3), v) for v in (0.0, 0.5, 1.0)])
    result = run_output(out.SaveAnimatedWEBP, context, images=frames, filename_prefix="anim/x", fps=10.0,
                        lossless=True, quality=80, method="default")
    assert result.ui == {"images": [{"filename": "x_00001_.webp", "subfolder": "anim", "type": "output"}],
                         "animated": [True]}
    with Image.open(tmp_path / "out/anim/x_00001_.webp") as webp:
        assert webp.n_frames == 3
        exif = webp.getexif()
        assert json.loads(exif[0x0110].split(":", 1)[1]) == context.prompt
        assert exif[0x010F].startswith("workflow:")
        webp.seek(1)
        webp.load()
        assert webp.info["duration"] == 100
        assert abs(np.asarray(webp.convert("RGB"))[0, 0, 0] - 128) <= 1
    result = run_output(out.SaveAnimatedPNG, context, images=frames, filename_prefix="anim/x", fps=4.0,
                        compress_level=4)
    assert result.ui["images"][0]["filename"] == "x_00002_.png"  # the counter spans extensions, as ComfyUI's
    data = (tmp_path / "out/anim/x_00002_.png").read_bytes()
    assert b"acTL" in data and b"comf" in data and data.index(b"comf") > data.index(b"IDAT")
    chunk = data.index(b"comfprompt\0")
    length = struct.unpack(">I", data[chunk - 4:chunk])[0]
    assert json.loads(data[chunk + 11:chunk + 4 + length]) == context.prompt
    with Image.open(io.BytesIO(data)) as png:
        assert png.n_frames == 3


def test_save_image_websocket_reports_png_frames(context):
    frames = torch.rand(2, 5, 7, 3)
    run_output(out.SaveImageWebsocket, context, images=frames)
    previews = [d for e, d in context.events if e == "preview"]
    progress = [(d["value"], d["max"]) for e, d in context.events if e == "progress"]
    assert progress == [(0, 2), (1, 2)]
    assert [p["format"] for p in previews] == ["PNG", "PNG"] and previews[1]["image"].size == (7, 5)
    assert out.SaveImageWebsocket.fingerprint(None) != out.SaveImageWebsocket.fingerprint(None)  # NaN: always runs


def test_interfaces_match_comfyui():
    info = im.ImageStitch.object_info()
    assert info["input_order"] == {"required": ["image1", "direction", "match_image_size", "spacing_width",
                                                "spacing_color"], "optional": ["image2"]}
    assert im.GetImageSize.object_info()["output_name"] == ["width", "height", "batch_size"]
    assert im.EmptyImage.object_info()["input"]["required"]["color"][1]["display"] == "color"
    assert im.ImageSharpen.object_info()["input_order"]["required"] == ["image", "sharpen_radius", "sigma", "alpha"]
    assert out.SaveAnimatedWEBP.object_info()["input_order"]["required"] == [
        "images", "filename_prefix", "fps", "lossless", "quality", "method"]
