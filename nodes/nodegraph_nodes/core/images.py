"""ComfyUI's core image nodes: scaling, batches, crops, flips, compositing, post-processing filters, sizes, and the
animated / websocket outputs.

An IMAGE is a float32 tensor [B, H, W, C] in 0..1 (C = 3, sometimes 4); a MASK is [B, H, W] or [H, W]. Inputs,
defaults and semantics follow ComfyUI's `nodes.py`, `comfy_extras/nodes_images.py`, `nodes_post_processing.py` and
`nodes_mask.py`. Declarations import no torch; `execute` does.
"""
from __future__ import annotations

import math
from typing import Any

from nodegraph.engine import MAX_RESOLUTION, Boolean, Combo, Float, Input, Int, Node, Output
from nodegraph.engine.limits import check_image_size, image_pixel_budget

SCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


def _fits(node: Node, width: int, height: int, batch: int, what: str = "the images") -> None:
    """Refuse, before allocating, images over the pixel budget (`--max-image-pixels`, batch counted as frames)."""
    env = getattr(getattr(node, "context", None), "env", None)
    check_image_size(width, height, batch, image_pixel_budget(env), what)


class ImageScaleBy(Node):
    """Resize images by a factor."""

    display_name = "Upscale Image By"
    category = "image/upscaling"
    image = Input("IMAGE")
    upscale_method = Combo(SCALE_METHODS)
    scale_by = Float(1.0, min=0.01, max=8.0, step=0.01)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, upscale_method: str, scale_by: float) -> tuple[Any]:
        from ..diffusion.image_ops import resize_images

        h, w = image.shape[1:3]
        _fits(self, round(w * scale_by), round(h * scale_by), image.shape[0], "the scaled images")
        return (resize_images(image, round(w * scale_by), round(h * scale_by), upscale_method),)


class ImageScaleToTotalPixels(Node):
    """Resize images to about `megapixels` million pixels (1 megapixel = 1024 x 1024), aspect ratio kept."""

    display_name = "Scale Image to Total Pixels"
    category = "image/upscaling"
    image = Input("IMAGE")
    upscale_method = Combo(SCALE_METHODS)
    megapixels = Float(1.0, min=0.01, max=16.0, step=0.01)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, upscale_method: str, megapixels: float) -> tuple[Any]:
        from ..diffusion.image_ops import resize_images

        h, w = image.shape[1:3]
        factor = math.sqrt(int(megapixels * 1024 * 1024) / (w * h))
        _fits(self, round(w * factor), round(h * factor), image.shape[0], "the scaled images")
        return (resize_images(image, round(w * factor), round(h * factor), upscale_method),)


class ImageScaleToMaxDimension(Node):
    """Resize images so that their longer side is `largest_size` pixels, aspect ratio kept."""

    display_name = "ImageScaleToMaxDimension"
    category = "image/upscaling"
    image = Input("IMAGE")
    # ComfyUI's list, with its repeated "bilinear", so saved workflows' values stay valid and in place.
    upscale_method = Combo(["area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"])
    largest_size = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, upscale_method: str, largest_size: int) -> tuple[Any]:
        from ..diffusion.image_ops import resize_images

        h, w = image.shape[1:3]
        if h > w:
            w, h = round(w / h * largest_size), largest_size
        elif w > h:
            w, h = largest_size, round(h / w * largest_size)
        else:
            w = h = largest_size
        _fits(self, w, h, image.shape[0], "the scaled images")
        return (resize_images(image, w, h, upscale_method),)


class ImageInvert(Node):
    """1 - image."""

    display_name = "Invert Image"
    category = "image"
    image = Input("IMAGE")
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any) -> tuple[Any]:
        return (1.0 - image,)


class ImageBatch(Node):
    """Join two image batches into one; image2 is resized (bilinear, center crop) to image1's size if needed."""

    display_name = "Batch Images"
    category = "image"
    image1 = Input("IMAGE")
    image2 = Input("IMAGE")
    outputs = (Output("IMAGE"),)

    def execute(self, image1: Any, image2: Any) -> tuple[Any]:
        import torch

        from ..diffusion.image_ops import resize_images

        if image1.shape[1:] != image2.shape[1:]:
            image2 = resize_images(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
        return (torch.cat((image1, image2), dim=0),)


class ImageFromBatch(Node):
    """`length` images of a batch starting at `batch_index` (both clamped to the batch)."""

    category = "image/batch"
    image = Input("IMAGE")
    batch_index = Int(0, min=0, max=4095)
    length = Int(1, min=1, max=4096)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, batch_index: int, length: int) -> tuple[Any]:
        start = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - start, length)
        return (image[start:start + length].clone(),)


class RepeatImageBatch(Node):
    """The batch repeated `amount` times."""

    category = "image/batch"
    image = Input("IMAGE")
    amount = Int(1, min=1, max=4096)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, amount: int) -> tuple[Any]:
        _fits(self, image.shape[2], image.shape[1], image.shape[0] * amount, "the repeated batch")
        return (image.repeat(amount, 1, 1, 1),)


class ImageCrop(Node):
    """A width x height crop at (x, y); the corner is clamped inside the image and the crop ends at its border."""

    display_name = "Crop Image"
    category = "image/transform"
    image = Input("IMAGE")
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, width: int, height: int, x: int, y: int) -> tuple[Any]:
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImageFlip(Node):
    """Mirror images: "x-axis" flips top and bottom, "y-axis" flips left and right."""

    category = "image/transform"
    image = Input("IMAGE")
    flip_method = Combo(["x-axis: vertically", "y-axis: horizontally"])
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, flip_method: str) -> tuple[Any]:
        import torch

        return (torch.flip(image, dims=[1] if flip_method.startswith("x") else [2]),)


ROTATIONS = ["none", "90 degrees", "180 degrees", "270 degrees"]


def quarter_turns(rotation: str) -> int:
    return ROTATIONS.index(rotation)


class ImageRotate(Node):
    """Rotate images clockwise by quarter turns."""

    display_name = "Rotate"
    category = "image/transform"
    image = Input("IMAGE")
    rotation = Combo(ROTATIONS)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, rotation: str) -> tuple[Any]:
        import torch

        # rot90 from the width axis towards the height axis turns the picture clockwise
        return (torch.rot90(image, k=quarter_turns(rotation), dims=[2, 1]),)


class ImageCompositeMasked(Node):
    """Paste `source` onto `destination` at (x, y), through an optional mask (1 = source)."""

    category = "image"
    destination = Input("IMAGE")
    source = Input("IMAGE")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    resize_source = Boolean(False)
    mask = Input("MASK", optional=True)
    outputs = (Output("IMAGE"),)

    def execute(self, destination, source, x, y, resize_source, mask=None) -> tuple[Any]:
        from ..diffusion.image_ops import composite

        out = composite(destination.movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
        return (out.movedim(1, -1),)


class ImageBlend(Node):
    """image1 mixed with a blend of image1 and image2: image1 * (1 - f) + blend(image1, image2) * f, clamped;
    image2 is resized (bicubic, center crop) to image1 when their shapes differ."""

    category = "image/postprocessing"
    image1 = Input("IMAGE")
    image2 = Input("IMAGE")
    blend_factor = Float(0.5, min=0.0, max=1.0, step=0.01)
    blend_mode = Combo(["normal", "multiply", "screen", "overlay", "soft_light", "difference"])
    outputs = (Output("IMAGE"),)

    def execute(self, image1: Any, image2: Any, blend_factor: float, blend_mode: str) -> tuple[Any]:
        from ..diffusion.image_ops import blend, resize_images

        if image1.shape != image2.shape:
            image2 = resize_images(image2, image1.shape[2], image1.shape[1], "bicubic", "center")
        out = image1 * (1 - blend_factor) + blend(image1, image2, blend_mode) * blend_factor
        return (out.clamp(0, 1),)


class ImageBlur(Node):
    """Gaussian blur with a (2 * blur_radius + 1)-pixel kernel; borders are reflected."""

    category = "image/postprocessing"
    image = Input("IMAGE")
    blur_radius = Int(1, min=1, max=31, step=1)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.1)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, blur_radius: int, sigma: float) -> tuple[Any]:
        from ..diffusion.image_ops import filter_channels, gaussian_kernel

        return (filter_channels(image, gaussian_kernel(2 * blur_radius + 1, sigma), blur_radius),)


class ImageSharpen(Node):
    """Unsharp masking: image + alpha * 10 * (image - gaussian blur), clamped to 0..1."""

    category = "image/postprocessing"
    image = Input("IMAGE")
    sharpen_radius = Int(1, min=1, max=31, step=1)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.01)
    alpha = Float(1.0, min=0.0, max=5.0, step=0.01)
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, sharpen_radius: int, sigma: float, alpha: float) -> tuple[Any]:
        from ..diffusion.image_ops import filter_channels, gaussian_kernel

        size = 2 * sharpen_radius + 1
        kernel = gaussian_kernel(size, sigma) * -(alpha * 10)
        kernel[size // 2, size // 2] += 1.0 - kernel.sum()  # the kernel sums to 1: flat areas stay as they are
        return (filter_channels(image, kernel, sharpen_radius).clamp(0, 1),)


class ImageQuantize(Node):
    """Reduce each image to at most `colors` colours (Pillow's median cut), optionally dithered."""

    category = "image/postprocessing"
    image = Input("IMAGE")
    colors = Int(256, min=1, max=256, step=1)
    dither = Combo(["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"])
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, colors: int, dither: str) -> tuple[Any]:
        import torch

        from ..diffusion.image_ops import pil_to_tensor, quantize, to_pil

        out = []
        for frame in image:
            picture = to_pil(frame[..., :3]).convert("RGB")
            out.append(pil_to_tensor(quantize(picture, colors, dither)))
        return (torch.stack(out),)


class ImageStitch(Node):
    """Put image2 to the right of, below, left of or above image1, optionally resizing image2 to match and with
    a spacer strip between; without image2, image1 is returned unchanged."""

    display_name = "Image Stitch"
    category = "image/transform"
    image1 = Input("IMAGE")
    direction = Combo(["right", "down", "left", "up"], default="right")
    match_image_size = Boolean(True)
    spacing_width = Int(0, min=0, max=1024, step=2)
    spacing_color = Combo(["white", "black", "red", "green", "blue"], default="white")
    image2 = Input("IMAGE", optional=True)
    outputs = (Output("IMAGE"),)

    def execute(self, image1, direction, match_image_size, spacing_width, spacing_color, image2=None):
        import torch

        from ..diffusion.image_ops import extend_batch, pad_centered, resize_images

        if image2 is None:
            return (image1,)
        batch = max(image1.shape[0], image2.shape[0])
        image1, image2 = (extend_batch(image1, batch), extend_batch(image2, batch))
        horizontal = direction in ("left", "right")
        (h1, w1), (h2, w2) = image1.shape[1:3], image2.shape[1:3]
        color = {"white": 1.0, "black": 0.0, "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0),
                 "blue": (0.0, 0.0, 1.0)}[spacing_color]
        if match_image_size:
            if horizontal:
                image2 = resize_images(image2, int(h1 * (w2 / h2)), h1, "lanczos")
            else:
                image2 = resize_images(image2, w1, int(w1 / (w2 / h2)), "lanczos")
        else:
            pad = color if isinstance(color, float) else 0.0
            if horizontal and h1 != h2:
                target = max(h1, h2)
                image1, image2 = (pad_centered(image, target, 1, pad) for image in (image1, image2))
            elif not horizontal and w1 != w2:
                target = max(w1, w2)
                image1, image2 = (pad_centered(image, target, 2, pad) for image in (image1, image2))
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = (
            torch.cat([im, im.new_ones(*im.shape[:-1], channels - im.shape[-1])], dim=-1) for im in (image1, image2)
        )
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            if horizontal:
                shape = (batch, max(image1.shape[1], image2.shape[1]), spacing_width, channels)
            else:
                shape = (batch, spacing_width, max(image1.shape[2], image2.shape[2]), channels)
            spacer = image1.new_zeros(shape)
            rgb = (color,) * 3 if isinstance(color, float) else color
            for i in range(min(3, channels)):
                spacer[..., i] = rgb[i]
            if channels == 4:
                spacer[..., 3] = 1.0
            parts.insert(1, spacer)
        return (torch.cat(parts, dim=2 if horizontal else 1),)


class GetImageSize(Node):
    """The width, height and batch size of an image batch."""

    display_name = "Get Image Size"
    category = "image"
    image = Input("IMAGE")
    outputs = (Output("INT", "width"), Output("INT", "height"), Output("INT", "batch_size"))

    def execute(self, image: Any) -> tuple[int, int, int]:
        batch, height, width = (int(n) for n in image.shape[:3])
        return (width, height, batch)


class EmptyImage(Node):
    """A batch of images of one colour (an integer 0xRRGGBB)."""

    category = "image"
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    batch_size = Int(1, min=1, max=4096)
    color = Int(0, min=0, max=0xFFFFFF, step=1, display="color")
    outputs = (Output("IMAGE"),)

    def execute(self, width: int, height: int, batch_size: int, color: int) -> tuple[Any]:
        import torch

        _fits(self, width, height, batch_size)
        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 0xFF
        return (rgb.expand(batch_size, height, width, 3).clone(),)


NODES = [
    ImageScaleBy, ImageScaleToTotalPixels, ImageScaleToMaxDimension, ImageInvert, ImageBatch, ImageFromBatch,
    RepeatImageBatch, ImageCrop, ImageFlip, ImageRotate, ImageCompositeMasked, ImageBlend, ImageBlur, ImageSharpen,
    ImageQuantize, ImageStitch, GetImageSize, EmptyImage,
]
