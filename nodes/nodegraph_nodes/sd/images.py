"""Image nodes: LoadImage, ImageScale, SaveImage, PreviewImage.

SaveImage writes ComfyUI's `<prefix>_<counter:05>_.png` names (subfolders in the prefix stay inside the output
folder) with the `prompt` and `workflow` text chunks, so a saved image re-opens as its workflow in ComfyUI's editor,
ours, and `nodegraph run image.png`.
"""
from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path
from typing import Any

from nodegraph.engine import MAX_RESOLUTION, Combo, Folders, Input, Int, Node, NodeResult, Output, String
from nodegraph.engine.folders import name_problem
from nodegraph.engine.limits import ImageTooLarge, check_image_size, image_pixel_budget, open_image

from ..core.files import input_file, input_fingerprint, output_prefix_problem, prefix_folder

IMAGE_SCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


def _input_images(env: Folders | None) -> list[str]:
    return env.list_inputs() if env is not None else []


class LoadImage(Node):
    """Load an image from the input folder: the RGB image and a mask from its alpha channel (1 where transparent).
    Frames of an animated image with the same size become a batch."""

    display_name = "Load Image"
    category = "image"
    image = Combo(_input_images, strict=False, image_upload=True, tooltip="An image in the input folder.")
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def check_inputs(cls, env: Folders | None, image: str = "", **_: Any) -> dict[str, str] | None:
        path, refused = input_file(env, "image", image, "image")
        if refused:
            return refused
        problem = _image_size_problem(path, env)
        return {"image": problem} if problem else None

    @classmethod
    def fingerprint(cls, env: Folders | None, image: str = "", **_: Any) -> Any:
        return input_fingerprint(env, image)

    def execute(self, image: str) -> tuple[Any, Any]:
        from ..diffusion.image_ops import load_image

        env = self.context.env
        return load_image(env.annotated_path(image), image_pixel_budget(env))


def _image_size_problem(path: Path, env: Folders | None) -> str | None:
    """Refuse at validation an image whose first frame alone is over the pixel budget (reads the header only)."""
    from PIL import UnidentifiedImageError

    try:
        with open_image(path, image_pixel_budget(env), repr(path.name)):
            pass
    except ImageTooLarge as exc:
        return str(exc)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return f"cannot read {path.name!r} as an image: {exc}"
    return None


class ImageScale(Node):
    """Resize images to a size in pixels; 0 for one side keeps the aspect ratio."""

    display_name = "Upscale Image"
    category = "image/upscaling"
    image = Input("IMAGE")
    upscale_method = Combo(IMAGE_SCALE_METHODS)
    width = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    crop = Combo(["disabled", "center"])
    outputs = (Output("IMAGE"),)

    def execute(self, image: Any, upscale_method: str, width: int, height: int, crop: str) -> tuple[Any]:
        from ..diffusion.image_ops import resize_nchw

        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        height = height or max(1, round(h * width / w))
        width = width or max(1, round(w * height / h))
        # The result is held as float32 in memory: the same pixel budget as decoding (batch counts as frames).
        check_image_size(width, height, image.shape[0], image_pixel_budget(self.context.env), "the scaled images")
        scaled = resize_nchw(image.movedim(-1, 1), width, height, upscale_method, crop)
        return (scaled.movedim(1, -1).clamp(0, 1),)


_COUNTER = re.compile(r"_(\d{5,})_\.png$")


def save_images(images: Any, folder: Path, prefix: str, pnginfo: dict[str, str], compress_level: int) -> list[dict]:
    """Write each image of a batch as `<prefix>_<counter:05>_.png`; returns ComfyUI's image records."""
    from PIL.PngImagePlugin import PngInfo

    from ..diffusion.image_ops import to_pil

    target, subfolder, name = prefix_folder(folder, prefix)
    existing = [int(m.group(1)) for p in target.glob(f"{glob_escape(name)}_*_.png") if (m := _COUNTER.search(p.name))]
    counter = max(existing, default=0) + 1
    info = PngInfo()
    for key, value in pnginfo.items():
        info.add_text(key, value)
    records = []
    for image in images:
        while True:
            filename = f"{name}_{counter:05}_.png"
            counter += 1
            try:
                handle = open(target / filename, "xb")  # exclusive: never overwrite another run's file
            except FileExistsError:
                continue
            break
        with handle:
            to_pil(image).save(handle, format="PNG", pnginfo=info, compress_level=compress_level)
        records.append({"filename": filename, "subfolder": subfolder, "type": ""})
    return records


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _pnginfo(context: Any) -> dict[str, str]:
    if context.runtime.settings.get("disable_metadata"):
        return {}
    chunks = {"prompt": json.dumps(context.prompt)} if context.prompt else {}
    for key, value in (context.extra_pnginfo or {}).items():
        chunks[key] = json.dumps(value)
    return chunks


class SaveImage(Node):
    """Save images to the output folder as PNG, with the workflow embedded (drop the PNG on the editor to reload
    it). The prefix may contain subfolders (`portraits/test`), which stay inside the output folder."""

    display_name = "Save Image"
    category = "image"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    images = Input("IMAGE", tooltip="The images to save.")
    filename_prefix = String("ComfyUI", tooltip="The prefix of the file names; may include subfolders.")

    @classmethod
    def check_inputs(cls, env: Folders | None, filename_prefix: str = "ComfyUI", **_: Any) -> dict[str, str] | None:
        # The longest name written is `<name>_<counter>_.png`; a name no file system takes is refused here.
        problem = name_problem(filename_prefix + "_00001_.png")
        if problem is not None:
            return {"filename_prefix": f"not a usable file name: {problem}"}
        return output_prefix_problem(env, filename_prefix)

    def execute(self, images: Any, filename_prefix: str) -> NodeResult:
        records = save_images(images, self.context.env.output_dir, filename_prefix, _pnginfo(self.context), 4)
        for record in records:
            record["type"] = "output"
        return NodeResult(ui={"images": records})


class PreviewImage(Node):
    """Show images in the editor without keeping them (written to the temp folder)."""

    display_name = "Preview Image"
    category = "image"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    images = Input("IMAGE")

    def execute(self, images: Any) -> NodeResult:
        prefix = "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        records = save_images(images, self.context.env.temp_dir, prefix, _pnginfo(self.context), 1)
        for record in records:
            record["type"] = "temp"
        return NodeResult(ui={"images": records})


NODES = [LoadImage, ImageScale, SaveImage, PreviewImage]
