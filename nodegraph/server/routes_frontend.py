"""What the official ComfyUI frontend (`nodegraph serve --frontend comfyui`) asks for besides the core API, in
ComfyUI's shapes, so that a first visit loads without errors:

- `GET /templates/index.json` -> the template browser's index: one category (`moduleName` "default") listing
  nodegraph's example workflows, each `{name, title, description, mediaType: "image", mediaSubtype: "webp", ...}`;
  `GET /templates/NAME.json` -> the example's editor (UI-format) workflow; `GET /templates/NAME-1.webp` -> its
  thumbnail (from `workflows/thumbnails/`); `GET /templates/index_logo.json` -> `{}` (no provider logos). ComfyUI
  serves these files from its `comfyui-workflow-templates` package; nodegraph serves its own examples instead.
- `GET /workflow_templates` -> `{}`: ComfyUI lists custom node packs' example workflows here (`{pack: [names]}`);
  no nodegraph pack ships any.
- `GET /i18n` -> `{}` (custom nodes' translations: none); `GET /global_subgraphs` -> `{}` (no blueprints installed),
  `GET /global_subgraphs/{id}` -> 404.
- `GET /experiment/models` -> `[{"name": folder, "folders": [its paths]}]` for every model folder;
  `GET /experiment/models/{folder}` -> `[{"name", "pathIndex", "modified", "created", "size"}]` (the model library);
  `GET /experiment/models/preview/{folder}/{path_index}/{name}` -> the model's preview picture (`NAME.png`, `.jpg`,
  `.webp` or `NAME.preview.*` beside it) as WebP, else 404.
- On a first visit the frontend reads the user's saved workflows and subgraphs (`GET /userdata?dir=workflows` and
  `?dir=subgraphs`), node templates (`GET /userdata/comfy.templates.json`) and stylesheet (`/user.css`,
  `/userdata/user.css`); before the user has saved any, these answer an empty list (an empty stylesheet) instead of
  ComfyUI's 404, which the browser logs as an error. Once they exist, the userdata routes answer as usual.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from ..engine import UnsafePath, resolve_inside
from ..engine.folders import MODEL_KINDS, Folders
from . import routes_user
from .routes_workflows import workflows_dir
from .state import STATE

THUMBNAILS = "thumbnails"  # folder of the examples' thumbnails, inside the workflows folder
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FIRST_VISIT_FOLDERS = ("workflows", "subgraphs")
NODE_TEMPLATES_FILE = "comfy.templates.json"
USER_CSS = "user.css"


def _examples(root: Path | None) -> list[str]:
    """Names of the examples that have an editor (UI-format) file: `NAME` for `NAME.ui.json`, sorted."""
    if root is None or not root.is_dir():
        return []
    return sorted(path.name.removesuffix(".ui.json") for path in root.glob("*.ui.json") if path.is_file())


def _positive_prompt(workflow: dict[str, Any]) -> str | None:
    """The text of the node titled "Positive Prompt..." (the examples' convention), for the description."""
    for node in workflow.get("nodes") or []:
        if isinstance(node, dict) and str(node.get("title") or "").startswith("Positive Prompt"):
            values = node.get("widgets_values")
            texts = [v for v in values if isinstance(v, str)] if isinstance(values, list) else []
            if texts:
                return texts[0]
    return None


def _template_entry(root: Path, name: str) -> dict[str, Any]:
    try:
        workflow = json.loads((root / f"{name}.ui.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        workflow = {}
    prompt = _positive_prompt(workflow) if isinstance(workflow, dict) else None
    title = name.replace("_", " ")
    description = f"nodegraph example: {title}" + (f", prompt “{prompt}”, on the demo models" if prompt else "")
    kinds = sorted({str(n.get("type")) for n in workflow.get("nodes") or [] if isinstance(n, dict)}) \
        if isinstance(workflow, dict) else []
    return {
        "name": name,
        "title": title,
        "description": description,
        "mediaType": "image",
        "mediaSubtype": "webp",
        "tags": ["nodegraph", "Image"],
        "models": ["nodegraph demo"],
        "nodeTypes": kinds,
    }


async def get_template_file(request: web.Request) -> web.StreamResponse:
    """`/templates/index.json`, `/templates/index_logo.json`, `/templates/NAME.json`, `/templates/NAME-1.webp`."""
    file = request.match_info["file"]
    root = workflows_dir(request)
    if file == "index.json":
        names = _examples(root)
        entries = [_template_entry(root, name) for name in names] if root is not None else []
        return web.json_response([{
            "moduleName": "default",
            "title": "nodegraph examples",
            "type": "image",
            "category": "nodegraph",
            "templates": entries,
        }])
    if file == "index_logo.json":
        return web.json_response({})
    names = set(_examples(root))
    if file.endswith(".json") and file.removesuffix(".json") in names and root is not None:
        return web.FileResponse(root / f"{file.removesuffix('.json')}.ui.json",
                                headers={"Content-Type": "application/json"})
    if file.endswith("-1.webp") and file.removesuffix("-1.webp") in names and root is not None:
        thumbnail = root / THUMBNAILS / f"{file.removesuffix('-1.webp')}.webp"
        if thumbnail.is_file():
            return web.FileResponse(thumbnail, headers={"Content-Type": "image/webp"})
    return web.json_response({"error": f"no template file {file!r}"}, status=404)


async def get_workflow_templates(request: web.Request) -> web.Response:
    return web.json_response({})


async def get_i18n(request: web.Request) -> web.Response:
    return web.json_response({})


async def get_global_subgraphs(request: web.Request) -> web.Response:
    return web.json_response({})


async def get_global_subgraph(request: web.Request) -> web.Response:
    return web.json_response({"error": f"no global subgraph {request.match_info['id']!r}"}, status=404)


# --- the model library -----------------------------------------------------------------------------------------------


def _model_roots(request: web.Request, folder: str) -> list[Path]:
    if folder not in MODEL_KINDS:
        raise web.HTTPNotFound(text=f"unknown model folder {folder!r}; known: {', '.join(MODEL_KINDS)}")
    return request.app[STATE].folders.model_roots(folder)


async def get_model_folders(request: web.Request) -> web.Response:
    folders = request.app[STATE].folders
    return web.json_response([{"name": kind, "folders": [str(p.absolute()) for p in folders.model_roots(kind)]}
                              for kind in MODEL_KINDS])


def _model_files(roots: list[Path], folder: str) -> list[dict[str, Any]]:
    files = []
    for index, root in enumerate(roots):
        for name in Folders(models_dirs=[root.parent]).list_models(folder):
            try:
                stat = (root / name).stat()
            except OSError:
                continue
            files.append({"name": name, "pathIndex": index, "modified": stat.st_mtime, "created": stat.st_ctime,
                          "size": stat.st_size})
    return files


async def get_model_files(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    roots = _model_roots(request, folder)
    return web.json_response(await asyncio.get_running_loop().run_in_executor(None, _model_files, roots, folder))


def _preview_webp(model: Path) -> bytes | None:
    from PIL import Image

    stem = model.with_suffix("") if model.suffix else model
    for candidate in [stem.with_name(stem.name + s) for s in PREVIEW_SUFFIXES] + \
                     [stem.with_name(stem.name + ".preview" + s) for s in PREVIEW_SUFFIXES]:
        if candidate.is_file():
            try:
                with Image.open(candidate) as image:
                    out = io.BytesIO()
                    image.save(out, format="WEBP")
                    return out.getvalue()
            except OSError:
                return None
    return None


async def get_model_preview(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    roots = _model_roots(request, folder)
    try:
        index = int(request.match_info["path_index"])
        root = roots[index]
        model = resolve_inside(root, request.match_info["filename"])
    except (ValueError, IndexError, UnsafePath):
        raise web.HTTPNotFound(text="no such model") from None
    data = await asyncio.get_running_loop().run_in_executor(None, _preview_webp, model)
    if data is None:
        raise web.HTTPNotFound(text="no preview picture for this model")
    return web.Response(body=data, content_type="image/webp")


# --- userdata on a first visit ---------------------------------------------------------------------------------------


async def list_userdata_first_visit(request: web.Request) -> web.Response:
    """The user's workflows / subgraphs before any was saved: an empty list (see the module docstring)."""
    directory = request.query.get("dir", "")
    if directory in FIRST_VISIT_FOLDERS:
        try:
            folder = resolve_inside(routes_user._user_dir(request), directory)
        except UnsafePath:
            folder = None
        if folder is not None and not os.path.exists(folder):
            return web.json_response([])
    return await routes_user.list_userdata(request)


async def get_userdata_file_first_visit(request: web.Request) -> web.StreamResponse:
    """A user file; the node templates file and the stylesheet read as empty before the user saved them."""
    file = request.match_info["file"]
    if file in (NODE_TEMPLATES_FILE, USER_CSS):
        if file == USER_CSS:
            return await get_user_css(request)
        if not resolve_inside(routes_user._user_dir(request), file).is_file():
            return web.json_response([])
    return await routes_user.get_userdata_file(request)


async def get_user_css(request: web.Request) -> web.StreamResponse:
    """The user's stylesheet (`/user.css`, which the frontend's index.html links, and `/userdata/user.css`), or an
    empty one before the user wrote any (a JSON 404 would be refused as a stylesheet, and logged)."""
    path = resolve_inside(routes_user._user_dir(request), USER_CSS)
    if path.is_file():
        return web.FileResponse(path, headers={"Content-Type": "text/css"})
    return web.Response(text="", content_type="text/css")


ROUTES = [
    ("GET", "/templates/{file}", get_template_file),
    ("GET", "/workflow_templates", get_workflow_templates),
    ("GET", "/i18n", get_i18n),
    ("GET", "/global_subgraphs", get_global_subgraphs),
    ("GET", "/global_subgraphs/{id}", get_global_subgraph),
    ("GET", "/experiment/models", get_model_folders),
    ("GET", "/experiment/models/{folder}", get_model_files),
    ("GET", "/experiment/models/preview/{folder}/{path_index}/{filename:.+}", get_model_preview),
    ("GET", "/userdata", list_userdata_first_visit),
    ("GET", "/userdata/{file}", get_userdata_file_first_visit),
    ("GET", "/user.css", get_user_css),
]
