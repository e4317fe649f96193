"""Output nodes besides SaveImage: animated WEBP / PNG files and images sent over the websocket.

Files follow ComfyUI's naming, `<prefix>_<counter:05>_.<ext>`, with the counter one past the highest already used by
any file of that prefix in the folder, and subfolders of the prefix kept inside the output folder. The workflow
travels with the file as ComfyUI writes it: EXIF tags in WEBP (0x0110 "prompt:<json>", then 0x010F, 0x010E, ... for
each extra_pnginfo entry "<key>:<json>"), `comf` chunks after the image data in animated PNG.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nodegraph.engine import Boolean, Combo, Float, Folders, Input, Int, Node, NodeResult, String

from .files import output_prefix_problem, prefix_folder

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


def next_path(folder: Path, prefix: str, ext: str) -> tuple[Path, dict[str, str]]:
    """A new file `<name>_<counter:05>_.<ext>` for `prefix` (which may hold subfolders) and its UI record."""
    target, subfolder, name = prefix_folder(folder, prefix)
    pattern = re.compile(re.escape(name) + r"_(\d{5,})_?\.")
    used = [int(m.group(1)) for p in target.iterdir() if (m := pattern.match(p.name))]
    counter = max(used, default=0) + 1
    while (target / f"{name}_{counter:05}_.{ext}").exists():
        counter += 1
    filename = f"{name}_{counter:05}_.{ext}"
    return target / filename, {"filename": filename, "subfolder": subfolder, "type": "output"}


def _metadata(context: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(prompt, extra_pnginfo) to embed, or (None, {}) when metadata is disabled."""
    if context.runtime.settings.get("disable_metadata"):
        return None, {}
    return (context.prompt or None), dict(context.extra_pnginfo or {})


def _frames(images: Any) -> list[Any]:
    from ..diffusion.image_ops import to_pil

    return [to_pil(image) for image in images]


class SaveAnimatedWEBP(Node):
    """Save an image batch as one animated WEBP (a frame per image) in the output folder."""

    category = "image/animation"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    images = Input("IMAGE")
    filename_prefix = String("ComfyUI")
    fps = Float(6.0, min=0.01, max=1000.0, step=0.01)
    lossless = Boolean(True)
    quality = Int(80, min=0, max=100)
    method = Combo(list(WEBP_METHODS))

    @classmethod
    def check_inputs(cls, env: Folders | None, filename_prefix: str = "ComfyUI", **_: Any) -> dict[str, str] | None:
        return output_prefix_problem(env, filename_prefix)

    def execute(self, images, filename_prefix, fps, lossless, quality, method) -> NodeResult:
        frames = _frames(images)
        exif = frames[0].getexif()
        prompt, extra = _metadata(self.context)
        if prompt is not None:
            exif[0x0110] = "prompt:" + json.dumps(prompt)
        tag = 0x010F
        for key, value in extra.items():
            exif[tag] = f"{key}:{json.dumps(value)}"
            tag -= 1
        path, record = next_path(self.context.env.output_dir, filename_prefix, "webp")
        frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], duration=int(1000.0 / fps),
                       exif=exif, lossless=lossless, quality=quality, method=WEBP_METHODS[method])
        return NodeResult(ui={"images": [record], "animated": [True]})


class SaveAnimatedPNG(Node):
    """Save an image batch as one animated PNG (APNG) in the output folder."""

    category = "image/animation"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    images = Input("IMAGE")
    filename_prefix = String("ComfyUI")
    fps = Float(6.0, min=0.01, max=1000.0, step=0.01)
    compress_level = Int(4, min=0, max=9)

    @classmethod
    def check_inputs(cls, env: Folders | None, filename_prefix: str = "ComfyUI", **_: Any) -> dict[str, str] | None:
        return output_prefix_problem(env, filename_prefix)

    def execute(self, images, filename_prefix, fps, compress_level) -> NodeResult:
        from PIL.PngImagePlugin import PngInfo

        frames = _frames(images)
        info = PngInfo()
        prompt, extra = _metadata(self.context)
        entries = ({"prompt": prompt} if prompt is not None else {}) | extra
        for key, value in entries.items():
            # ComfyUI's private chunk: "<key>\0<json>", after the image data
            info.add(b"comf", key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1"), after_idat=True)
        path, record = next_path(self.context.env.output_dir, filename_prefix, "png")
        frames[0].save(path, format="PNG", pnginfo=info, compress_level=compress_level, save_all=True,
                       duration=int(1000.0 / fps), append_images=frames[1:])
        return NodeResult(ui={"images": [record], "animated": [True]})


class SaveImageWebsocket(Node):
    """Send each image to the websocket client as a full-size PNG binary frame (ComfyUI's preview frame, format
    PNG) instead of writing a file: for API clients that collect images from the socket."""

    category = "api node/image"
    output_node = True
    images = Input("IMAGE")

    @classmethod
    def fingerprint(cls, env: Folders | None, **constants: Any) -> float:
        return float("nan")  # sending is the point: run every time, as ComfyUI does

    def execute(self, images: Any) -> NodeResult:
        frames = _frames(images)
        for i, frame in enumerate(frames):
            self.context.report("progress", {"value": i, "max": len(frames), "node": self.context.node_id})
            self.context.report("preview", {"node": self.context.node_id, "image": frame, "format": "PNG"})
            self.context.check_interrupted()
        return NodeResult()


NODES = [SaveAnimatedWEBP, SaveAnimatedPNG, SaveImageWebsocket]
