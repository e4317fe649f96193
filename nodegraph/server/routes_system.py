"""Node definitions, system stats, feature flags, extensions (docs/compat.md §1.2, §1.5, §3.4).

Nothing here imports torch: devices are described through torch only if a model pack has already imported it.
"""
from __future__ import annotations

import asyncio
import os
import sys
from importlib import metadata
from typing import Any

from aiohttp import web

from .. import __version__
from .bodies import BadRequest, json_object, read_json
from .state import STATE


async def get_object_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    info = await asyncio.get_running_loop().run_in_executor(None, state.registry.object_info, state.folders)
    return web.json_response(info)


async def get_object_info_class(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["node_class"]
    info = await asyncio.get_running_loop().run_in_executor(None, state.registry.object_info, state.folders, name)
    return web.json_response(info)


def memory() -> tuple[int, int]:
    """(total, available) system RAM in bytes, from /proc/meminfo where there is one."""
    try:
        fields = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


SECRET_OPTIONS = ("--auth-token",)


def masked_argv(argv: list[str]) -> list[str]:
    """The command line with the values of secret options replaced by `***`."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
        elif arg in SECRET_OPTIONS:
            out.append(arg)
            hide_next = True
        elif arg.startswith(tuple(f"{option}=" for option in SECRET_OPTIONS)):
            out.append(arg.split("=", 1)[0] + "=***")
        else:
            out.append(arg)
    return out


def devices(ram_total: int, ram_free: int) -> list[dict[str, Any]]:
    """The compute devices; the CPU alone until torch is loaded, and while it is still being imported (its module
    then exists but is half-initialised: asking it anything may fail)."""
    try:
        found = _torch_devices()
    except Exception:
        found = []
    if not found:
        found.append({"name": "cpu", "type": "cpu", "index": 0, "vram_total": ram_total, "vram_free": ram_free,
                      "torch_vram_total": 0, "torch_vram_free": 0})
    return found


def _torch_devices() -> list[dict[str, Any]]:
    torch = sys.modules.get("torch")  # never imported here: only described once a model pack loaded it
    spec = getattr(torch, "__spec__", None)
    if torch is None or getattr(spec, "_initializing", False):
        return []
    found = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            found.append({
                "name": f"cuda:{index} {torch.cuda.get_device_name(index)}",
                "type": "cuda",
                "index": index,
                "vram_total": total,
                "vram_free": free,
                "torch_vram_total": torch.cuda.memory_reserved(index),
                "torch_vram_free": torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index),
            })
    return found


def _system_stats(state: Any) -> dict[str, Any]:
    ram_total, ram_free = memory()
    return {
        "system": {
            "os": sys.platform,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": __version__,
            "nodegraph_version": __version__,
            "required_frontend_version": "",
            "python_version": sys.version,
            "pytorch_version": _package_version("torch"),
            "embedded_python": False,
            # nodegraph has no API nodes (ComfyUI's comfy.org partner nodes), which ComfyUI announces with this
            # flag; the official frontend then makes no calls to api.comfy.org (release notes and the like).
            "argv": masked_argv(sys.argv) + ([] if "--disable-api-nodes" in sys.argv else ["--disable-api-nodes"]),
        },
        "devices": devices(ram_total, ram_free),
        "nodegraph": {
            "output_cache": state.executor.cache.stats() if state.executor is not None else None,
            "executor": state.backend.stats(),
            "resources": {owner.name: owner.stats() for owner in state.executor.runtime.owners()}
            if state.executor is not None else {},
            "queue_remaining": state.queue.remaining(),
            "max_history": state.config.max_history,
        },
    }


async def get_system_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(await asyncio.get_running_loop().run_in_executor(None, _system_stats, state))


async def get_features(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].feature_flags())


async def get_extensions(request: web.Request) -> web.Response:
    """Front-end extension scripts: none yet (node packs with web code would list theirs here)."""
    return web.json_response([])


async def get_workers(request: web.Request) -> web.Response:
    """The executor backend: its name and, for Ray, each worker (state, running prompt, loaded models)."""
    return web.json_response(request.app[STATE].backend.stats())


async def post_workers(request: web.Request) -> web.Response:
    """`{"size": N}` sets how many Ray workers the pool keeps (`null`: one per GPU / node of the cluster)."""
    body = json_object(await read_json(request))
    size = body.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise BadRequest("size must be a whole number >= 0, or null to follow the cluster")
    backend = request.app[STATE].backend
    try:
        backend.resize(size)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return web.json_response(backend.stats())


ROUTES = [
    ("GET", "/object_info", get_object_info),
    ("GET", "/object_info/{node_class}", get_object_info_class),
    ("GET", "/system_stats", get_system_stats),
    ("GET", "/features", get_features),
    ("GET", "/extensions", get_extensions),
    ("GET", "/workers", get_workers),
    ("POST", "/workers", post_workers),
]
