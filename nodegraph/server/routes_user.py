"""Users, settings and userdata, as the ComfyUI editor needs them to boot and save workflows (docs/compat.md §6).

Single-user: everything lives under `<data-dir>/user/default/`; settings in `comfy.settings.json` there. Every
path from a request is resolved (symlinks included) inside that folder or refused with 403.
"""
from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from ..engine import UnsafePath, resolve_inside
from ..engine.folders import InvalidName
from .bodies import BadRequest, json_object, query_bool, read_json
from .routes_files import DANGEROUS_TYPES
from .state import STATE

SETTINGS_FILE = "comfy.settings.json"


def _user_dir(request: web.Request) -> Path:
    folder = request.app[STATE].config.user_dir
    folder.mkdir(parents=True, exist_ok=True)
    return Path(os.path.realpath(folder))


def _inside(root: Path, relative: str) -> Path:
    try:
        return resolve_inside(root, relative)
    except InvalidName as exc:
        raise BadRequest(str(exc)) from None
    except UnsafePath as exc:
        raise web.HTTPForbidden(text=str(exc)) from None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_info(root: Path, path: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "path": path.relative_to(root).as_posix(),
        "size": st.st_size,
        "modified": int(st.st_mtime * 1000),
        "created": int(getattr(st, "st_birthtime", st.st_ctime) * 1000),
    }


# --- users and settings ----------------------------------------------------------------------------------------------


async def get_users(request: web.Request) -> web.Response:
    return web.json_response({"storage": "server", "migrated": True})


async def post_users(request: web.Request) -> web.Response:
    return web.json_response({"error": "this server is single-user; there are no users to create"}, status=400)


def _load_settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(_load_settings(_user_dir(request) / SETTINGS_FILE))


async def get_setting(request: web.Request) -> web.Response:
    settings = _load_settings(_user_dir(request) / SETTINGS_FILE)
    return web.json_response(settings.get(request.match_info["setting_id"]))


async def _update_settings(request: web.Request, changes: dict[str, Any]) -> None:
    path = _user_dir(request) / SETTINGS_FILE
    async with request.app[STATE].settings_lock:  # read-modify-write: concurrent posts must not lose each other's keys
        settings = _load_settings(path)
        settings.update(changes)
        _write_atomic(path, json.dumps(settings, indent=2).encode())


async def post_settings(request: web.Request) -> web.Response:
    await _update_settings(request, json_object(await read_json(request), "settings"))
    return web.Response(status=200)


async def post_setting(request: web.Request) -> web.Response:
    """One setting; the editor sends the raw JSON value without a Content-Type."""
    await _update_settings(request, {request.match_info["setting_id"]: await read_json(request)})
    return web.Response(status=200)


# --- userdata --------------------------------------------------------------------------------------------------------


async def list_userdata(request: web.Request) -> web.Response:
    """`?dir=D&recurse=&split=&full_info=`: the files under D (relative to D)."""
    directory = request.query.get("dir")
    if not directory:
        raise BadRequest("query parameter 'dir' is required")
    root = _user_dir(request)
    folder = _inside(root, directory)
    if not folder.is_dir():
        raise web.HTTPNotFound(text=f"no userdata folder {directory!r}")
    recurse = query_bool(request, "recurse")
    files = sorted(folder.rglob("*") if recurse else folder.iterdir())
    files = [f for f in files if f.is_file()]
    if query_bool(request, "full_info"):
        return web.json_response([_file_info(folder, f) for f in files])
    relative = [f.relative_to(folder).as_posix() for f in files]
    if query_bool(request, "split"):
        return web.json_response([[rel, *rel.split("/")] for rel in relative])
    return web.json_response(relative)


async def list_userdata_v2(request: web.Request) -> web.Response:
    """`?path=P`: the entries of folder P, files and folders."""
    root = _user_dir(request)
    relative = request.query.get("path", "").strip("/")
    folder = _inside(root, relative) if relative else root
    if not folder.is_dir():
        raise web.HTTPNotFound(text=f"no userdata folder {relative!r}")
    entries = []
    for entry in sorted(folder.iterdir()):
        st = entry.stat()
        item: dict[str, Any] = {
            "name": entry.name,
            "path": entry.relative_to(root).as_posix(),
            "type": "directory" if entry.is_dir() else "file",
            "modified": int(st.st_mtime * 1000),
        }
        if entry.is_file():
            item["size"] = st.st_size
        entries.append(item)
    return web.json_response(entries)


async def get_userdata_file(request: web.Request) -> web.StreamResponse:
    relative = request.match_info["file"]
    path = _inside(_user_dir(request), relative)
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no userdata file {relative!r}")
    if relative == "user.css":
        return web.FileResponse(path, headers={"Content-Type": "text/css"})
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type in DANGEROUS_TYPES:
        content_type = "application/octet-stream"
    name = path.name.replace('"', "")
    return web.FileResponse(
        path, headers={"Content-Type": content_type, "Content-Disposition": f'attachment; filename="{name}"'}
    )


def _saved_answer(request: web.Request, root: Path, path: Path) -> web.Response:
    if query_bool(request, "full_info"):
        return web.json_response(_file_info(root, path))
    return web.json_response(path.relative_to(root).as_posix())


async def post_userdata_file(request: web.Request) -> web.Response:
    """Save the raw body; `overwrite=false` refuses (409) to replace an existing file."""
    root = _user_dir(request)
    relative = request.match_info["file"]
    path = _inside(root, relative)
    if path == root or path.is_dir():
        raise BadRequest(f"{relative!r} is a folder")
    if request.query.get("overwrite", "true") == "false" and path.exists():
        return web.json_response({"error": f"{relative!r} already exists"}, status=409)
    data = await request.read()
    await asyncio.get_running_loop().run_in_executor(None, _write_atomic, path, data)
    return _saved_answer(request, root, path)


async def delete_userdata_file(request: web.Request) -> web.Response:
    relative = request.match_info["file"]
    path = _inside(_user_dir(request), relative)
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no userdata file {relative!r}")
    path.unlink()
    return web.Response(status=204)


async def move_userdata_file(request: web.Request) -> web.Response:
    root = _user_dir(request)
    source = _inside(root, request.match_info["file"])
    dest = _inside(root, request.match_info["dest"])
    if not source.is_file():
        raise web.HTTPNotFound(text=f"no userdata file {request.match_info['file']!r}")
    if request.query.get("overwrite", "true") == "false" and dest.exists():
        return web.json_response({"error": f"{request.match_info['dest']!r} already exists"}, status=409)
    if dest == root or dest.is_dir():
        raise BadRequest(f"{request.match_info['dest']!r} is a folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, dest)
    return _saved_answer(request, root, dest)


ROUTES = [
    ("GET", "/users", get_users),
    ("POST", "/users", post_users),
    ("GET", "/settings", get_settings),
    ("POST", "/settings", post_settings),
    ("GET", "/settings/{setting_id}", get_setting),
    ("POST", "/settings/{setting_id}", post_setting),
    ("GET", "/userdata", list_userdata),
    ("GET", "/v2/userdata", list_userdata_v2),
    ("GET", "/userdata/{file}", get_userdata_file),
    ("POST", "/userdata/{file}", post_userdata_file),
    ("DELETE", "/userdata/{file}", delete_userdata_file),
    ("POST", "/userdata/{file}/move/{dest}", move_userdata_file),
]
