"""The OpenAPI 3.1 description of every HTTP route, served at /openapi.json (and /api/openapi.json).

Hand-written on purpose: the routes follow ComfyUI's wire format, which is documented here rather than derived
from handler signatures. A test checks that every registered route is described.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__

JSON = "application/json"


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def _ok(description: str, schema: dict[str, Any] | None = None, media: str = JSON) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {media: {"schema": schema}}
    return response


def _query(name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _body(schema: dict[str, Any], media: str = JSON, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {media: {"schema": schema}}}


def _op(summary: str, responses: dict[str, Any], parameters: list | None = None, body: dict | None = None,
        tag: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if tag:
        op["tags"] = [tag]
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    return op


ERROR = {"$ref": "#/components/schemas/Error"}
PROMPT_ERROR = {"$ref": "#/components/schemas/PromptError"}
E400 = _ok("Bad request", ERROR)
E403 = _ok("Path outside its folder", ERROR)
E404 = _ok("Not found", ERROR)
EMPTY = _ok("Done (empty body)")
IDS = {"type": "array", "items": {"type": "string"}}

COMPONENTS = {
    "schemas": {
        "Error": _obj(error={"type": "string"}),
        "PromptError": _obj(
            error=_obj(type={"type": "string"}, message={"type": "string"}, details={"type": "string"},
                       extra_info={"type": "object"}),
            node_errors={"type": "object", "description": "node id -> {errors[], dependent_outputs[], class_type}"},
        ),
        "PromptRequest": _obj(
            prompt={"type": "object", "description": "API-format workflow: node id -> {class_type, inputs, _meta}"},
            client_id={"type": "string", "description": "websocket sid that receives the execution messages"},
            extra_data={"type": "object", "description": "extra_pnginfo etc.; credential keys are never stored"},
            partial_execution_targets={**IDS, "description": "run only these output nodes"},
            front={"type": "boolean", "description": "queue before everything queued normally"},
            number={"type": "number", "description": "explicit priority (lower runs first)"},
            prompt_id={"type": "string", "description": "client-chosen id; must be new"},
        ),
        "PromptQueued": _obj(prompt_id={"type": "string"}, number={"type": "number"},
                             node_errors={"type": "object"}),
        "QueueItem": {"type": "array", "description": "[number, prompt_id, prompt, extra_data, outputs_to_execute]"},
        "HistoryEntry": _obj(
            prompt={"$ref": "#/components/schemas/QueueItem"},
            outputs={"type": "object", "description": "node id -> UI output, e.g. {images: [{filename, subfolder, "
                                                      "type}]}"},
            status=_obj(status_str={"type": "string", "enum": ["success", "error"]}, completed={"type": "boolean"},
                        messages={"type": "array", "description": "[[event, data], ...] execution_* messages"}),
            meta={"type": "object"},
            timings={"type": "object", "description": "node id -> seconds, for the nodes that executed"},
        ),
        "Job": _obj(
            id={"type": "string"},
            status={"type": "string", "enum": ["pending", "in_progress", "completed", "failed", "cancelled"]},
            priority={"type": "number"}, create_time={"type": "integer"},
            execution_start_time={"type": "integer"}, execution_end_time={"type": "integer"},
            outputs_count={"type": "integer"}, preview_output={"type": "object"}, workflow_id={"type": "string"},
            execution_error={"type": "object"},
        ),
        "FileRef": _obj(name={"type": "string"}, subfolder={"type": "string"}, type={"type": "string"}),
    }
}

UPLOAD = _obj(
    image={"type": "string", "format": "binary"},
    type={"type": "string", "enum": ["input", "temp", "output"]},
    subfolder={"type": "string"},
    overwrite={"type": "string", "description": "'true' or '1' to replace a file of the same name"},
)

PATHS: dict[str, dict[str, Any]] = {
    "/ws": {"get": _op(
        "WebSocket (upgrade): status, execution messages, binary previews; accepts feature_flags and prompt messages. "
        "See docs/api.md.", {"101": _ok("Switching protocols")}, [_query("clientId", "resume this client id")],
        tag="events")},
    "/prompt": {
        "get": _op("Queue size", {"200": _ok("exec_info", _obj(exec_info=_obj(queue_remaining={"type": "integer"})))},
                   tag="queue"),
        "post": _op("Validate and queue a workflow",
                    {"200": _ok("Queued", {"$ref": "#/components/schemas/PromptQueued"}),
                     "400": _ok("Invalid (ComfyUI error shape)", PROMPT_ERROR)},
                    body=_body({"$ref": "#/components/schemas/PromptRequest"}), tag="queue"),
    },
    "/queue": {
        "get": _op("Running and pending prompts", {"200": _ok("Queue", _obj(
            queue_running={"type": "array", "items": {"$ref": "#/components/schemas/QueueItem"}},
            queue_pending={"type": "array", "items": {"$ref": "#/components/schemas/QueueItem"}}))}, tag="queue"),
        "post": _op("Remove pending prompts", {"200": EMPTY, "400": E400},
                    body=_body(_obj(clear={"type": "boolean"}, delete=IDS)), tag="queue"),
    },
    "/interrupt": {"post": _op("Interrupt the running prompt (only that one, if prompt_id is given)",
                               {"200": EMPTY, "400": E400},
                               body=_body(_obj(prompt_id={"type": "string"}), required=False), tag="queue")},
    "/free": {"post": _op("Unload models / clear caches after the current prompt", {"200": EMPTY, "400": E400},
                          body=_body(_obj(unload_models={"type": "boolean"}, free_memory={"type": "boolean"}),
                                     required=False), tag="system")},
    "/history": {
        "get": _op("Finished prompts, oldest first (paged)",
                   {"200": _ok("prompt_id -> entry", {"type": "object", "additionalProperties":
                                                      {"$ref": "#/components/schemas/HistoryEntry"}}), "400": E400},
                   [_query("max_items", "at most this many (the newest, unless offset is given)", {"type": "integer"}),
                    _query("offset", "skip this many of the oldest", {"type": "integer"})], tag="history"),
        "post": _op("Delete history entries", {"200": EMPTY, "400": E400},
                    body=_body(_obj(clear={"type": "boolean"}, delete=IDS)), tag="history"),
    },
    "/history/{prompt_id}": {"get": _op("One history entry ({} if unknown)", {"200": _ok("{prompt_id: entry}")},
                                        [_path("prompt_id", "prompt id")], tag="history")},
    "/jobs": {"get": _op("Jobs (queue + history), filtered, sorted, paged", {
        "200": _ok("Jobs", _obj(jobs={"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                                pagination=_obj(offset={"type": "integer"}, limit={"type": "integer"},
                                                total={"type": "integer"}, has_more={"type": "boolean"}))),
        "400": E400}, [
        _query("status", "comma-separated: pending,in_progress,completed,failed,cancelled"),
        _query("workflow_id", "extra_pnginfo.workflow.id"),
        _query("sort_by", "created_at | execution_duration"), _query("sort_order", "asc | desc (default desc)"),
        _query("limit", "> 0", {"type": "integer"}), _query("offset", ">= 0", {"type": "integer"})], tag="jobs")},
    "/jobs/{job_id}": {"get": _op("Job detail: adds outputs, execution_status, timings, workflow",
                                  {"200": _ok("Job", {"$ref": "#/components/schemas/Job"}), "404": E404},
                                  [_path("job_id", "prompt id")], tag="jobs")},
    "/jobs/{job_id}/cancel": {"post": _op(
        "Cancel a job: pending -> removed, running -> interrupted",
        {"200": _ok("Outcome", _obj(id={"type": "string"}, result={"type": "string",
                                                                   "enum": ["cancelled", "interrupted"]})),
         "404": E404, "409": _ok("Already finished", ERROR)}, [_path("job_id", "prompt id")], tag="jobs")},
    "/jobs/cancel": {"post": _op("Cancel several jobs", {
        "200": _ok("Outcome", _obj(cancelled=IDS, interrupted=IDS, not_cancelled=IDS)), "400": E400},
        body=_body(_obj(job_ids=IDS)), tag="jobs")},
    "/view": {"get": _op("A file from output / input / temp, optionally re-encoded", {
        "200": _ok("File bytes", {"type": "string", "format": "binary"}, "application/octet-stream"),
        "400": E400, "403": E403, "404": E404}, [
        _query("filename", "file name (may end in ' [input]' / ' [output]' / ' [temp]')", required=True),
        _query("type", "output (default) | input | temp"), _query("subfolder", "folder inside the root"),
        _query("preview", "re-encode: 'webp;90' or 'jpeg;90'"), _query("channel", "rgba (default) | rgb | a")],
        tag="files")},
    "/upload/image": {"post": _op("Upload an image (collisions: same bytes reused, else 'name (1).ext')", {
        "200": _ok("Stored as", {"$ref": "#/components/schemas/FileRef"}), "400": E400,
        "413": _ok("Larger than --max-upload-size", ERROR)}, body=_body(UPLOAD, "multipart/form-data"), tag="files")},
    "/upload/mask": {"post": _op("Upload a mask: its alpha is applied to original_ref", {
        "200": _ok("Stored as", {"$ref": "#/components/schemas/FileRef"}), "400": E400, "404": E404},
        body=_body({**UPLOAD, "properties": {**UPLOAD["properties"], "original_ref": {
            "type": "string", "description": "JSON {filename, subfolder, type}"}}}, "multipart/form-data"),
        tag="files")},
    "/models": {"get": _op("Model folder names", {"200": _ok("Names", IDS)}, tag="models")},
    "/models/{folder}": {"get": _op("Model files in a folder", {"200": _ok("Relative paths", IDS), "404": E404},
                                    [_path("folder", "checkpoints, controlnet, vae, loras, embeddings")],
                                    tag="models")},
    "/embeddings": {"get": _op("Embedding names (no extension)", {"200": _ok("Names", IDS)}, tag="models")},
    "/view_metadata/{folder}": {"get": _op("__metadata__ of a .safetensors model", {
        "200": _ok("Metadata", {"type": "object"}), "404": E404},
        [_path("folder", "model folder"), _query("filename", "model file", required=True)], tag="models")},
    "/object_info": {"get": _op("Every node type's definition", {"200": _ok("class_type -> record")},
                                tag="nodes")},
    "/object_info/{node_class}": {"get": _op("One node type ({} if unknown)", {"200": _ok("{class_type: record}")},
                                             [_path("node_class", "class_type")], tag="nodes")},
    "/system_stats": {"get": _op("System, devices, cache and model memory", {"200": _ok("Stats", _obj(
        system={"type": "object"}, devices={"type": "array"}, nodegraph={"type": "object"}))}, tag="system")},
    "/features": {"get": _op("Server feature flags", {"200": _ok("Flags", {"type": "object"})}, tag="system")},
    "/extensions": {"get": _op("Editor extension scripts", {"200": _ok("URLs", IDS)}, tag="system")},
    "/workers": {
        "get": _op("The executor backend and, with Ray, its workers (docs/ray.md)", {"200": _ok("Pool", _obj(
            name={"type": "string"}, workers={"type": "array"}))}, tag="system"),
        "post": _op("Resize the Ray worker pool", {"200": _ok("Pool", {"type": "object"}), "400": E400},
                    body=_body(_obj(size={"type": ["integer", "null"]})), tag="system"),
    },
    "/users": {
        "get": _op("User storage mode", {"200": _ok("Mode", _obj(storage={"type": "string"},
                                                                 migrated={"type": "boolean"}))}, tag="user"),
        "post": _op("Create a user (refused: single-user)", {"400": E400}, tag="user"),
    },
    "/settings": {
        "get": _op("All settings", {"200": _ok("Settings", {"type": "object"})}, tag="user"),
        "post": _op("Merge settings", {"200": EMPTY, "400": E400}, body=_body({"type": "object"}), tag="user"),
    },
    "/settings/{setting_id}": {
        "get": _op("One setting (null if unset)", {"200": _ok("Value", {})}, [_path("setting_id", "id")], tag="user"),
        "post": _op("Set one setting (raw JSON value, any Content-Type)", {"200": EMPTY, "400": E400},
                    [_path("setting_id", "id")], _body({}), tag="user"),
    },
    "/userdata": {"get": _op("List user files", {"200": _ok("Paths or file infos", {"type": "array"}),
                                                 "400": E400, "403": E403, "404": E404},
                             [_query("dir", "folder", required=True), _query("recurse", "true|false"),
                              _query("split", "true|false"), _query("full_info", "true|false")], tag="user")},
    "/v2/userdata": {"get": _op("List a user folder (files and folders)", {
        "200": _ok("Entries", {"type": "array"}), "403": E403, "404": E404}, [_query("path", "folder")],
        tag="user")},
    "/userdata/{file}": {
        "get": _op("A user file (URL-encoded path)", {"200": _ok("Bytes"), "403": E403, "404": E404},
                   [_path("file", "e.g. workflows%2Fa.json")], tag="user"),
        "post": _op("Save a user file (raw body)", {"200": _ok("Relative path or file info"), "403": E403,
                                                    "409": _ok("Exists and overwrite=false", ERROR)},
                    [_path("file", "path"), _query("overwrite", "default true"), _query("full_info", "true|false")],
                    _body({"type": "string", "format": "binary"}, "application/octet-stream"), tag="user"),
        "delete": _op("Delete a user file", {"204": _ok("Deleted"), "403": E403, "404": E404},
                      [_path("file", "path")], tag="user"),
    },
    "/userdata/{file}/move/{dest}": {"post": _op("Move a user file", {
        "200": _ok("Relative path or file info"), "403": E403, "404": E404,
        "409": _ok("Destination exists and overwrite=false", ERROR)},
        [_path("file", "source"), _path("dest", "destination"), _query("overwrite", "default true"),
         _query("full_info", "true|false")], tag="user")},
    "/nodegraph/workflows": {"get": _op("Example workflows (the project's workflows/ folder)", {
        "200": _ok("Names and titles", _obj(workflows={"type": "array"}))}, tag="editor")},
    "/nodegraph/workflows/{name}": {"get": _op("One example workflow's JSON", {
        "200": _ok("Workflow", {"type": "object"}), "400": E400, "404": E404},
        [_path("name", "file name, e.g. txt2img.json (URL-encoded for subfolders)")], tag="editor")},
    # What the official ComfyUI frontend reads besides the core API (routes_frontend.py).
    "/templates/{file}": {"get": _op("Template browser files: index.json, index_logo.json, NAME.json (an example's "
                                     "UI workflow), NAME-1.webp (its thumbnail)", {
        "200": _ok("JSON or WebP"), "404": E404}, [_path("file", "file name")], tag="editor")},
    "/workflow_templates": {"get": _op("Custom node packs' example workflows: {}", {
        "200": _ok("{pack: [names]}", {"type": "object"})}, tag="editor")},
    "/i18n": {"get": _op("Custom nodes' translations: {}", {"200": _ok("{locale: ...}", {"type": "object"})},
                         tag="editor")},
    "/global_subgraphs": {"get": _op("Installed subgraph blueprints: {}", {
        "200": _ok("{id: blueprint}", {"type": "object"})}, tag="editor")},
    "/global_subgraphs/{id}": {"get": _op("One subgraph blueprint (none are installed)", {"404": E404},
                                          [_path("id", "blueprint id")], tag="editor")},
    "/experiment/models": {"get": _op("Model folders and their paths", {"200": _ok("Folders", {"type": "array"})},
                                      tag="models")},
    "/experiment/models/{folder}": {"get": _op("Model files: name, pathIndex, modified, created, size", {
        "200": _ok("Files", {"type": "array"}), "404": E404}, [_path("folder", "model folder")], tag="models")},
    "/experiment/models/preview/{folder}/{path_index}/{filename:.+}": {"get": _op(
        "A model's preview picture as WebP (filename may contain '/')", {
            "200": _ok("WebP", media="image/webp"), "404": E404},
        [_path("folder", "model folder"), _path("path_index", "index of the models root"),
         _path("filename:.+", "model file name; its extension is ignored")], tag="models")},
    "/user.css": {"get": _op("The user's stylesheet (empty when none)", {"200": _ok("CSS", media="text/css")},
                             tag="user")},
    "/openapi.json": {"get": _op("This document", {"200": _ok("OpenAPI 3.1", {"type": "object"})}, tag="system")},
}


def document() -> dict[str, Any]:
    """The OpenAPI document; every path also answers with an `/api` prefix (the form ComfyUI's editor uses)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nodegraph",
            "version": __version__,
            "description": "ComfyUI-compatible workflow server. Every path below also answers under /api (e.g. "
                           "/api/prompt). With an access token, send 'Authorization: Bearer <token>' or '?token='. "
                           "Errors are JSON. Websocket protocol: docs/api.md.",
        },
        "components": {**COMPONENTS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"bearer": []}],
        "paths": PATHS,
    }


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


ROUTES = [("GET", "/openapi.json", get_openapi)]
