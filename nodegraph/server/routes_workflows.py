"""Example workflows for the editor: the `.json` files of the project's `workflows/` folder (COMPAT has no such
route; it is ours, under `/api/nodegraph/`).

- `GET /nodegraph/workflows` -> `{"workflows": [{"name": "txt2img.json", "title": "txt2img"}, ...]}` sorted by name,
  files of subfolders included as `sub/name.json`
  (URL-encode the slash when asking for one: `sub%2Fname.json`). A workflow shipped in both formats is listed as
  both files (`NAME.json`, the API prompt, and `NAME.ui.json`, the editor's layout) under the same title; the
  editor shows it once, opening the `.ui.json`.
- `GET /nodegraph/workflows/{name}` -> the file's JSON; 404 when absent, 400 for a name that is not a `.json` file
  inside the folder (`..`, absolute paths and symlinks out of it are refused).
"""
from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from ..engine import UnsafePath, resolve_inside
from ..paths import project_dir
from .state import STATE


def workflows_dir(request: web.Request) -> Path | None:
    configured = request.app[STATE].config.workflows_dir
    return Path(configured) if configured is not None else project_dir("workflows")


def _title(relative: str) -> str:
    """`sub/hires_fix.ui.json` -> `sub/hires fix`: the same title for a workflow's API and UI files."""
    base = relative.removesuffix(".json").removesuffix(".ui")
    return base.replace("_", " ")


async def list_workflows(request: web.Request) -> web.Response:
    root = workflows_dir(request)
    names: list[str] = []
    if root is not None and root.is_dir():
        for path in sorted(root.rglob("*.json")):
            try:
                resolve_inside(root, str(path.relative_to(root)))
            except UnsafePath:
                continue  # a symlink pointing out of the folder
            if path.is_file():
                names.append(path.relative_to(root).as_posix())
    return web.json_response({"workflows": [{"name": name, "title": _title(name)} for name in names]})


async def get_workflow(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    root = workflows_dir(request)
    if not name.endswith(".json"):
        return web.json_response({"error": f"{name!r} is not a workflow file name (expected *.json)"}, status=400)
    if root is None or not root.is_dir():
        return web.json_response({"error": f"no example workflow {name!r}"}, status=404)
    try:
        path = resolve_inside(root, name)
    except UnsafePath as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if not path.is_file():
        return web.json_response({"error": f"no example workflow {name!r}"}, status=404)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return web.json_response({"error": f"{name} is not valid JSON: {exc}"}, status=500)
    return web.json_response(document)


ROUTES = [
    ("GET", "/nodegraph/workflows", list_workflows),
    ("GET", "/nodegraph/workflows/{name}", get_workflow),
]
