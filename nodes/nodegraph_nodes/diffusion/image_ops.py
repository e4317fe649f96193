"""Image and latent tensor operations: loading, PIL conversion, resizing (ComfyUI's methods), center crops, masks,
compositing, blending, filters, quantizing, batches, edges. The node modules declare nodes and call these.

IMAGE tensors are float32 [B, H, W, 3] in 0..1; MASK tensors [B, H, W]; latents [B, C, h, w].
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a [H, W, 3] float tensor in 0..1."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """One [H, W, 3] image tensor (0..1) as an 8-bit PIL image."""
    array = (image.detach().float().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)


def _frames_within(source: Image.Image, budget: int, name: str):
    """The frames of an image, refusing (before decoding it) the frame that would take the total past `budget`
    pixels: a small file can hold a huge picture or hundreds of large frames."""
    from nodegraph.engine.limits import check_image_size

    width, height = source.size
    check_image_size(width, height, 1, budget, name)
    index = 0
    while True:
        if index:
            check_image_size(width, height, index + 1, budget, f"{name} (at least {index + 1} frames)")
        try:
            source.seek(index)
        except EOFError:
            return
        yield source
        index += 1


def load_image(path: Path, max_pixels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of the first frame's size as an IMAGE batch, and masks (1 = transparent) from their alpha; at most
    `max_pixels` pixels over all frames (ImageTooLarge otherwise; default: the engine's budget)."""
    from nodegraph.engine.limits import DEFAULT_MAX_IMAGE_PIXELS, open_image

    budget = max_pixels or DEFAULT_MAX_IMAGE_PIXELS
    images, masks = [], []
    with open_image(path, budget, path.name) as source:
        size = None
        for frame in _frames_within(source, budget, path.name):
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":  # 16-bit greyscale PNGs
                frame = frame.point(lambda v: v * (1 / 255))
            if size is None:
                size = frame.size
            if frame.size != size:
                continue
            images.append(pil_to_tensor(frame))
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha))
            elif frame.mode == "P" and "transparency" in frame.info:
                alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha))
            else:
                masks.append(torch.zeros(size[1], size[0]))
    return torch.stack(images), torch.stack(masks)


def center_crop(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [B, C, H, W] to the aspect ratio of width:height, around the center."""
    h, w = x.shape[-2:]
    target = width / height
    if w / h > target:
        new_w = round(h * target)
        left = (w - new_w) // 2
        return x[..., :, left : left + new_w]
    new_h = round(w / target)
    top = (h - new_h) // 2
    return x[..., top : top + new_h, :]


def resize_nchw(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize [B, C, H, W] to (height, width) with ComfyUI's method names."""
    if crop == "center":
        x = center_crop(x, width, height)
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return _lanczos(x, width, height)
    if method == "area":
        return F.interpolate(x, size=(height, width), mode="area")
    if method == "nearest-exact":
        return F.interpolate(x, size=(height, width), mode="nearest-exact")
    if method in ("bilinear", "bicubic"):
        return F.interpolate(x, size=(height, width), mode=method, align_corners=False, antialias=False)
    raise ValueError(f"unknown resize method {method!r}")


def _lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos through PIL, channel by channel (for images in 0..1)."""
    out = []
    for sample in x:
        channels = [
            torch.from_numpy(
                np.asarray(
                    Image.fromarray(c.float().cpu().numpy(), mode="F").resize((width, height), Image.LANCZOS),
                    dtype=np.float32,
                )
            )
            for c in sample
        ]
        out.append(torch.stack(channels))
    return torch.stack(out).to(x.dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between feature vectors along dim 1, with linearly interpolated lengths.

    ComfyUI's rules at the two degenerate angles: neighbours pointing (nearly) the same way give the first vector
    unchanged, (nearly) opposite ones a plain linear blend.
    """
    len_a = a.norm(dim=1, keepdim=True)
    len_b = b.norm(dim=1, keepdim=True)
    unit_a = a / len_a.clamp_min(1e-12)
    unit_b = b / len_b.clamp_min(1e-12)
    dot = (unit_a * unit_b).sum(dim=1, keepdim=True)
    same, opposite = dot > 1 - 1e-5, dot < -1 + 1e-5
    omega = dot.clamp(-1.0, 1.0).acos()
    sin_omega = omega.sin().where(~(same | opposite), torch.ones_like(omega))  # no 0/0 where it is not used
    direction = ((1 - t) * omega).sin() / sin_omega * unit_a + (t * omega).sin() / sin_omega * unit_b
    out = direction * (len_a * (1 - t) + len_b * t)
    out = torch.where(opposite, a * (1 - t) + b * t, out)
    return torch.where(same, a.expand_as(out), out)


def _bislerp_axis(x: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Resample one spatial axis (2 = height, 3 = width) by slerping between the two nearest samples."""
    n = x.shape[axis]
    pos = (torch.arange(size, dtype=torch.float32) + 0.5) * n / size - 0.5
    pos = pos.clamp(0, n - 1)
    low = pos.floor().long()
    high = (low + 1).clamp(max=n - 1)
    t = (pos - low.float()).to(x.dtype)
    a = x.index_select(axis, low)
    b = x.index_select(axis, high)
    shape = [1, 1, 1, 1]
    shape[axis] = size
    return _slerp(a, b, t.reshape(shape))


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resampling that slerps latent feature vectors instead of averaging them (keeps their norm)."""
    return _bislerp_axis(_bislerp_axis(x.float(), width, 3), height, 2).to(x.dtype)


def load_mask_channel(path: Path, channel: str) -> torch.Tensor:
    """LoadImageMask: one channel ("alpha", "red", "green", "blue") of an image as a [1, H, W] mask; alpha is
    inverted (transparent = 1). An image without that channel gives a 64x64 zero mask, as in ComfyUI."""
    with Image.open(path) as source:
        image = ImageOps.exif_transpose(source)
        if image.getbands() != ("R", "G", "B", "A"):
            if image.mode == "I":  # 16-bit greyscale PNGs
                image = image.point(lambda v: v * (1 / 255))
            image = image.convert("RGBA")
        band = channel[0].upper()
        if band not in image.getbands():
            return torch.zeros(1, 64, 64)
        mask = torch.from_numpy(np.asarray(image.getchannel(band), dtype=np.float32) / 255.0)
    return (1.0 - mask if band == "A" else mask).unsqueeze(0)


def grow_mask(mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
    """Grey dilation (expand > 0) or erosion (< 0) of [B, H, W] masks, |expand| times, over a 3x3 neighbourhood
    (a cross when `tapered_corners`). Edges are padded with their own values, so they neither grow nor shrink
    the mask by themselves (what scipy.ndimage's reflecting border gives for a 3x3 footprint)."""
    out = mask.float()
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if not (tapered_corners and dy and dx)]
    reduce = torch.maximum if expand > 0 else torch.minimum
    height, width = out.shape[-2:]
    for _ in range(abs(expand)):
        padded = F.pad(out.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
        result = None
        for dy, dx in offsets:
            view = padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            result = view if result is None else reduce(result, view)
        out = result
    return out.clone()


def canny_edges(image: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """Canny edges of IMAGE [B, H, W, 3] in 0..1 as an IMAGE of 0/1 with the edges in all three channels.

    The thresholds are ComfyUI's (0..1, on the gradient magnitude of the 0..1 grayscale image with unnormalised
    3x3 Sobel filters after a 5x5 Gaussian blur of sigma 1, L2 norm), computed with OpenCV: the blurred image's
    gradients are taken at the 0..255 scale, where those thresholds are 255 times larger, and handed to cv2.Canny,
    which does the non-maximum suppression and the hysteresis.
    """
    import cv2  # here, not at the top: of the image ops only this one needs OpenCV

    out = []
    for frame in image.detach().float().cpu().numpy():
        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) * 255.0
        blurred = cv2.GaussianBlur(gray, (5, 5), 1.0, borderType=cv2.BORDER_REFLECT)
        dx, dy = (
            np.rint(cv2.Sobel(blurred, cv2.CV_32F, ox, oy, ksize=3, borderType=cv2.BORDER_REPLICATE)).astype(np.int16)
            for ox, oy in ((1, 0), (0, 1))
        )
        edges = cv2.Canny(dx, dy, low_threshold * 255.0, high_threshold * 255.0, L2gradient=True)
        out.append(torch.from_numpy(edges > 0).float())
    return torch.stack(out)[..., None].repeat(1, 1, 1, 3)


def resize_images(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize an IMAGE [B, H, W, C] to width x height (at least 1 x 1): resize_nchw on channels-first."""
    return resize_nchw(image.movedim(-1, 1), max(1, width), max(1, height), method, crop).movedim(1, -1)


def repeat_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """`t` [B, ...] with exactly `batch` entries: cut when longer, repeated whole (then cut) when shorter."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] > batch:
        return t[:batch]
    return t.repeat(math.ceil(batch / t.shape[0]), *([1] * (t.ndim - 1)))[:batch]


def reshape_latent_to(shape: torch.Size, latent: torch.Tensor, repeat_batch: bool = True) -> torch.Tensor:
    """`latent` resized (bilinear, center crop) to the spatial size of `shape`, its batch repeated to shape[0]."""
    if latent.shape[1:] != tuple(shape[1:]):
        latent = resize_nchw(latent, shape[3], shape[2], "bilinear", "center")
    return repeat_to_batch(latent, shape[0]) if repeat_batch else latent


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None,
              multiplier: int, resize_source: bool) -> torch.Tensor:
    """Paste `source` [B, C, h, w] into a copy of `destination` [B, C, H, W] at (x, y) / multiplier, weighted by
    `mask` (resized bilinearly to the source; 1 = source). The paste is cut at the destination's border.
    Batches of source and mask are repeated to the destination's batch size (ComfyUI's composite)."""
    destination = destination.clone()
    if resize_source:
        source = F.interpolate(source, size=destination.shape[2:], mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])
    left, top = x // multiplier, y // multiplier
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=source.shape[2:], mode="bilinear")
        mask = repeat_to_batch(mask, source.shape[0])
    visible_h = max(0, min(source.shape[2], destination.shape[2] - top))
    visible_w = max(0, min(source.shape[3], destination.shape[3] - left))
    mask = mask[:, :, :visible_h, :visible_w]
    region = destination[:, :, top:top + visible_h, left:left + visible_w]
    destination[:, :, top:top + visible_h, left:left + visible_w] = (
        mask * source[:, :, :visible_h, :visible_w] + (1 - mask) * region
    )
    return destination


def _soft_light_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, torch.sqrt(x))


def blend(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """The blend modes of ImageBlend (a: base, b: layer)."""
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (_soft_light_g(a) - a))
    if mode == "difference":
        return a - b
    raise ValueError(f"blend_mode {mode!r} is not one of normal, multiply, screen, overlay, soft_light, difference")


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """ComfyUI's blur kernel: a Gaussian over a size x size grid spanning -1..1 (not pixel units), normalised."""
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    g = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return g / g.sum()


def filter_channels(image: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """Convolve each channel of an IMAGE with `kernel`, reflecting the border."""
    channels = image.shape[-1]
    x = F.pad(image.movedim(-1, 1), (radius, radius, radius, radius), mode="reflect")
    weight = kernel.to(x.dtype).expand(channels, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=channels).movedim(1, -1)


def quantize(picture: Image.Image, colors: int, dither: str) -> Image.Image:
    """A PIL RGB picture reduced to a `colors`-colour palette computed from itself."""
    palette = picture.quantize(colors=colors)  # the palette; quantizing against it applies the dither choice
    if dither == "none":
        return picture.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")
    if dither == "floyd-steinberg":
        return picture.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")
    order = int(dither.split("-")[1])
    # ordered dithering: add a tiled, normalised Bayer threshold matrix scaled to the palette's spacing
    spread = 2 * 256 / (len(palette.getpalette()) // 3)
    matrix = _bayer(int(math.log2(order))) * spread + 0.5
    pixels = np.asarray(picture, dtype=np.float32)
    h, w = pixels.shape[:2]
    tiled = np.tile(matrix, (math.ceil(h / order), math.ceil(w / order)))[:h, :w, None]
    shifted = Image.fromarray(np.clip(pixels + tiled, 0, 255).astype(np.uint8))
    return shifted.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")


def _bayer(n: int) -> np.ndarray:
    """The 2^n x 2^n Bayer matrix, normalised to be centred on 0 (ComfyUI's recursive construction)."""
    if n == 0:
        return np.zeros((1, 1), np.float32)
    q = 4**n
    m = q * _bayer(n - 1)
    return np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q


def extend_batch(image: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat the last image until the batch has `batch` images."""
    if image.shape[0] >= batch:
        return image
    return torch.cat([image, image[-1:].repeat(batch - image.shape[0], 1, 1, 1)])


def pad_centered(image: torch.Tensor, size: int, dim: int, value: float) -> torch.Tensor:
    """IMAGE padded with `value` on both sides of `dim` (1: height, 2: width) to `size` (never cut)."""
    missing = size - image.shape[dim]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, 0, 0, before, after) if dim == 1 else (0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)
