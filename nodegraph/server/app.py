"""The aiohttp application: every API route at `/x` and `/api/x`, the websocket, the editor's static files.

Anything that matches no route answers a JSON 404 (or 405 when only the method is wrong), never an HTML page.
"""
from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from ..engine import UnsafePath, resolve_inside
from ..paths import project_dir
from . import openapi, routes_files, routes_frontend, routes_queue, routes_system, routes_user, routes_workflows
from .config import ServerConfig
from .security import guard, json_errors, safe_headers
from .state import STATE, ServerState
from .websocket import websocket_handler

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]

ROUTES: list[Route] = [
    ("GET", "/ws", websocket_handler),
    *routes_queue.ROUTES,
    *routes_files.ROUTES,
    *routes_system.ROUTES,
    *routes_frontend.ROUTES,  # before routes_user: it answers two userdata reads of a first visit
    *routes_user.ROUTES,
    *routes_workflows.ROUTES,
    *openapi.ROUTES,
]


def web_root(config: ServerConfig) -> Path | None:
    return config.web_root if config.web_root is not None else project_dir("web")


async def static_or_not_found(request: web.Request) -> web.StreamResponse:
    """The editor's files (index.html at /); otherwise a JSON 404, or 405 if another method would match."""
    root = web_root(request.app[STATE].config)
    if request.method in ("GET", "HEAD") and root is not None and root.is_dir():
        relative = request.match_info["path"] or "index.html"
        try:
            path = resolve_inside(root, relative)
        except UnsafePath:
            path = None
        if path is not None and path.is_dir():
            path = path / "index.html"
        if path is not None and path.is_file():
            return web.FileResponse(path)
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        return web.json_response({"error": f"method {request.method} not allowed here"}, status=405,
                                 headers={"Allow": ", ".join(sorted(allowed))})
    return web.json_response({"error": f"not found: {request.path}"}, status=404)


def create_app(config: ServerConfig) -> web.Application:
    """Build the application; its server state starts (database, worker) with the app and stops with it."""
    config.check()
    app = web.Application(middlewares=[json_errors, guard], client_max_size=config.max_upload_bytes)
    state = ServerState(config)
    app[STATE] = state
    for method, path, handler in ROUTES:
        for prefix in ("", "/api"):
            if method == "GET":
                app.router.add_get(prefix + path, handler)
            else:
                app.router.add_route(method, prefix + path, handler)
    app.router.add_route("*", "/{path:.*}", static_or_not_found)
    app.on_response_prepare.append(safe_headers)

    async def start(app: web.Application) -> None:
        await state.start()

    async def shutdown(app: web.Application) -> None:
        await state.shutdown()

    async def cleanup(app: web.Application) -> None:
        await state.cleanup()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app

