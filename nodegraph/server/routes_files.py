"""Files: /view, uploads, model lists (docs/compat.md §1.2, §1.6).
Every user-given path goes through `resolve_inside`.

Decoding and encoding images runs on a thread, never on the event loop.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import mimetypes
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..engine import Folders, UnsafePath, resolve_inside
from ..engine.folders import MODEL_KINDS, InvalidName
from ..engine.limits import DEFAULT_MAX_IMAGE_PIXELS, ImageTooLarge, image_pixel_budget, open_image
from .bodies import BadRequest, parse_json
from .state import STATE

T = TypeVar("T")

# Served as downloads, never rendered: they could run script in the server's origin (GHSA-779p-m5rp-r4h4).
DANGEROUS_TYPES = {
    "text/html", "application/xhtml+xml", "text/javascript", "application/javascript", "text/css",
    "image/svg+xml", "application/xml", "text/xml",
}


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _split_annotation(name: str, default: str) -> tuple[str, str]:
    """`x.png [output]` -> ("x.png", "output"): ComfyUI's annotated names pick the folder."""
    for kind in ("input", "output", "temp"):
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return name, default


def _root(folders: Folders, kind: str) -> Path:
    try:
        return folders.root_for(kind)
    except UnsafePath as exc:
        raise BadRequest(str(exc)) from None


# At most this many images are decoded at once (previews, masks): each may take up to the pixel budget in memory.
DECODE_SLOTS = 2
_DECODE_SLOTS_KEY = "nodegraph_decode_slots"


def _decode_slots(request: web.Request) -> asyncio.Semaphore:
    state = request.app[STATE]
    slots = getattr(state, _DECODE_SLOTS_KEY, None)
    if slots is None:
        slots = asyncio.Semaphore(DECODE_SLOTS)
        setattr(state, _DECODE_SLOTS_KEY, slots)
    return slots


# --- /view -----------------------------------------------------------------------------------------------------------


def _view_file(request: web.Request) -> Path:
    folders = request.app[STATE].folders
    filename = request.query.get("filename")
    if not filename:
        raise BadRequest("query parameter 'filename' is required")
    filename, kind = _split_annotation(filename, request.query.get("type", "output") or "output")
    if filename.startswith(("/", "\\")) or ".." in filename or "\x00" in filename:
        raise BadRequest(f"invalid filename {filename!r}")
    subfolder = request.query.get("subfolder", "")
    # Input files are also looked up in the read-only folders searched after the input folder (the example
    # workflows' images), as the nodes that load them do.
    roots = [_root(folders, kind), *(folders.extra_input_dirs if kind == "input" else [])]
    for root in roots:
        try:
            folder = resolve_inside(root, subfolder) if subfolder else Path(os.path.realpath(root))
            path = resolve_inside(folder, os.path.basename(filename))  # symlinks resolved, must stay inside
        except InvalidName as exc:
            raise BadRequest(str(exc)) from None
        except UnsafePath as exc:
            raise web.HTTPForbidden(text=str(exc)) from None
        if path.is_file():
            return path
    raise web.HTTPNotFound(text=f"no file {filename!r} in {kind}" + (f"/{subfolder}" if subfolder else ""))


def _render(path: Path, channel: str, preview: str | None, asked_alpha: bool,
            budget: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[bytes, str] | None:
    """Re-encode per `channel` / `preview` (webp when the client asked for a channel with alpha); None to send
    the file as it is. Only the first frame is decoded, and an image over `budget` pixels is refused
    (ImageTooLarge) before it is decoded."""
    from PIL import Image

    if channel == "rgba" and not preview:
        return None
    img = open_image(path, budget, path.name)  # over the budget: refused before anything is decoded
    with img:
        img.load()
        if channel == "a":
            alpha = img.getchannel("A") if "A" in img.getbands() else Image.new("L", img.size, 255)
            img = Image.new("RGBA", img.size, (0, 0, 0, 0))
            img.putalpha(alpha)
        elif channel == "rgb":
            img = img.convert("RGB")
        buffer = io.BytesIO()
        if preview:
            fmt, _, quality_text = preview.partition(";")
            fmt = fmt.strip().lower()
            try:
                quality = max(1, min(100, int(quality_text))) if quality_text else 90
            except ValueError:
                quality = 90
            if fmt not in ("webp", "jpeg") or asked_alpha:
                fmt = "webp"
            if fmt == "jpeg":
                img = img.convert("RGB")
            img.save(buffer, format=fmt.upper(), quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        img.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"


async def get_view(request: web.Request) -> web.StreamResponse:
    path = _view_file(request)
    channel = request.query.get("channel", "rgba") or "rgba"
    if channel not in ("rgba", "rgb", "a"):
        raise BadRequest("channel must be rgba, rgb or a")
    preview = request.query.get("preview") or None
    disposition = 'filename="' + path.name.replace('"', "").replace("\r", "").replace("\n", "") + '"'
    if channel != "rgba" or preview:
        budget = image_pixel_budget(request.app[STATE].folders)
        try:
            async with _decode_slots(request):
                rendered = await _off_loop(_render, path, channel, preview, "a" in request.query.get("channel", ""),
                                           budget)
        except ImageTooLarge as exc:
            raise BadRequest(f"cannot re-encode: {exc}", status=413) from None
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for files that are not images
            raise BadRequest(f"cannot re-encode {path.name}: {exc}") from None
        if rendered is not None:
            data, content_type = rendered
            return web.Response(body=data, content_type=content_type, headers={"Content-Disposition": disposition})
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type in DANGEROUS_TYPES:
        content_type = "application/octet-stream"
    return web.FileResponse(path, headers={"Content-Type": content_type, "Content-Disposition": disposition})


# --- uploads ---------------------------------------------------------------------------------------------------------


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _store_upload(folder: Path, filename: str, data: bytes, overwrite: bool) -> str:
    """Write `data` as `filename` in `folder`; reuse an identical file, else pick `name (1).ext`, `(2)`..."""
    folder.mkdir(parents=True, exist_ok=True)
    target = resolve_inside(folder, filename)
    if not overwrite:
        digest = hashlib.sha256(data).hexdigest()
        stem, ext = os.path.splitext(filename)
        index = 0
        while target.exists():
            if target.is_file() and _file_hash(target) == digest:
                return target.name  # the same bytes were uploaded before: reuse them
            index += 1
            target = resolve_inside(folder, f"{stem} ({index}){ext}")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)  # readers never see half a file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target.name


def _upload_target(folders: Folders, form: Any) -> tuple[Path, str, str]:
    kind = str(form.get("type") or "input")
    root = _root(folders, kind)
    subfolder = str(form.get("subfolder") or "")
    try:
        folder = resolve_inside(root, subfolder) if subfolder else Path(os.path.realpath(root))
    except UnsafePath as exc:
        raise BadRequest(f"invalid subfolder: {exc}") from None
    return folder, subfolder, kind


async def _read_form(request: web.Request) -> Any:
    """The multipart form of an upload; anything else (or a broken body) is a 400."""
    if request.content_type != "multipart/form-data":
        raise BadRequest(f"expected a multipart/form-data body, got {request.content_type or 'none'}")
    try:
        return await request.post()
    except (ValueError, AssertionError, HttpProcessingError) as exc:  # aiohttp's errors for malformed multipart
        raise BadRequest(f"malformed multipart body: {exc}") from None


def _upload_name(field: Any) -> tuple[str, bytes]:
    if not isinstance(field, web.FileField):
        raise BadRequest("multipart field 'image' (a file) is required")
    name = field.filename or ""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        raise BadRequest(f"invalid file name {name!r}")
    return name, field.file.read()


async def post_upload_image(request: web.Request) -> web.Response:
    folders = request.app[STATE].folders
    form = await _read_form(request)
    name, data = _upload_name(form.get("image"))
    folder, subfolder, kind = _upload_target(folders, form)
    overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
    try:
        stored = await _off_loop(_store_upload, folder, name, data, overwrite)
    except UnsafePath as exc:
        raise BadRequest(str(exc)) from None
    return web.json_response({"name": stored, "subfolder": subfolder, "type": kind})


def _apply_mask(original: Path, mask: bytes, budget: int = DEFAULT_MAX_IMAGE_PIXELS) -> bytes:
    """The original image with the mask's alpha channel, its PNG text chunks kept. Both are checked against the
    pixel budget before anything is decoded."""
    from PIL import PngImagePlugin

    with open_image(original, budget, f"the original image {original.name}") as img, \
            open_image(io.BytesIO(mask), budget, "the mask") as mask_img:
        img.load()
        info = PngImagePlugin.PngInfo()
        for key, value in (getattr(img, "text", None) or {}).items():
            info.add_text(key, value)
        alpha = mask_img.convert("RGBA").getchannel("A")
        result = img.convert("RGBA")
        if alpha.size != result.size:
            alpha = alpha.resize(result.size)
        result.putalpha(alpha)
        buffer = io.BytesIO()
        result.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()


async def post_upload_mask(request: web.Request) -> web.Response:
    folders = request.app[STATE].folders
    form = await _read_form(request)
    name, data = _upload_name(form.get("image"))
    ref_text = form.get("original_ref")
    if not isinstance(ref_text, str):
        raise BadRequest("field 'original_ref' (JSON {filename, subfolder, type}) is required")
    ref = parse_json(ref_text)
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise BadRequest("original_ref must be a JSON object with a 'filename'")
    ref_name, ref_kind = _split_annotation(ref["filename"], str(ref.get("type") or "input"))
    try:
        original = resolve_inside(_root(folders, ref_kind), os.path.join(str(ref.get("subfolder") or ""), ref_name))
    except UnsafePath as exc:
        raise BadRequest(f"invalid original_ref: {exc}") from None
    if not original.is_file():
        raise web.HTTPNotFound(text=f"original image {ref['filename']!r} not found")
    try:
        async with _decode_slots(request):
            merged = await _off_loop(_apply_mask, original, data, image_pixel_budget(folders))
    except ImageTooLarge as exc:
        raise BadRequest(f"cannot apply the mask: {exc}", status=413) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadRequest(f"cannot apply the mask: {exc}") from None
    folder, subfolder, kind = _upload_target(folders, form)
    overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
    stored = await _off_loop(_store_upload, folder, name, merged, overwrite)
    return web.json_response({"name": stored, "subfolder": subfolder, "type": kind})


# --- models ----------------------------------------------------------------------------------------------------------


async def get_models(request: web.Request) -> web.Response:
    return web.json_response(list(MODEL_KINDS))


async def get_model_folder(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in MODEL_KINDS:
        raise web.HTTPNotFound(text=f"unknown model folder {folder!r}")
    return web.json_response(await _off_loop(request.app[STATE].folders.list_models, folder))


async def get_embeddings(request: web.Request) -> web.Response:
    names = await _off_loop(request.app[STATE].folders.list_models, "embeddings")
    return web.json_response([os.path.splitext(name)[0] for name in names])


def _safetensors_metadata(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            return None
        try:
            header = json.loads(fh.read(length))
        except ValueError:
            return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


async def get_view_metadata(request: web.Request) -> web.Response:
    """The `__metadata__` of a .safetensors model file."""
    folder = request.match_info["folder"]
    filename = request.query.get("filename", "")
    if folder not in MODEL_KINDS or not filename.endswith(".safetensors"):
        raise web.HTTPNotFound(text="not a safetensors model")
    try:
        path = request.app[STATE].folders.model_path(folder, filename)
    except (UnsafePath, FileNotFoundError) as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    metadata = await _off_loop(_safetensors_metadata, path) if path.is_file() else None
    if metadata is None:
        raise web.HTTPNotFound(text="no metadata")
    return web.json_response(metadata)


ROUTES = [
    ("GET", "/view", get_view),
    ("POST", "/upload/image", post_upload_image),
    ("POST", "/upload/mask", post_upload_mask),
    ("GET", "/models", get_models),
    ("GET", "/models/{folder}", get_model_folder),
    ("GET", "/embeddings", get_embeddings),
    ("GET", "/view_metadata/{folder}", get_view_metadata),
]
