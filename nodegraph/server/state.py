"""Everything one running server shares between its routes, websocket and worker."""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .. import __version__
from ..warmup import Warmup
from ..warmup import enabled as warmup_enabled
from ..engine import Executor, NodeRegistry, default_registry
from ..jobs import JobQueue
from .config import ServerConfig
from .executors import LocalBackend, PromptBackend, make_backend
from .hub import Hub
from .store import Store
from .worker import PromptWorker


class ServerState:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.folders = config.folders
        if config.max_image_pixels:  # the image budget travels with the folders, to the nodes that decode images
            self.folders.settings["max_image_pixels"] = int(config.max_image_pixels)
        self.registry: NodeRegistry = config.registry if config.registry is not None else default_registry()
        self.backend: PromptBackend = make_backend(config)
        # The in-process executor (None when prompts run elsewhere, e.g. on Ray workers).
        self.executor: Executor | None = self.backend.executor if isinstance(self.backend, LocalBackend) else None
        self.store = Store(config.database_path, max_history=config.max_history)  # the history; the queue's items
        self.hub = Hub()
        self.queue = JobQueue(self.store, on_client=self.hub.reserve)
        self.settings_lock = asyncio.Lock()  # settings are read-modify-written
        # torch & co. imported in the background once listening (serve.py starts it; prompts on Ray import there)
        self.warmup = Warmup(self.registry.warm_imports() if self.executor is not None and warmup_enabled() else ())
        self.worker = PromptWorker(self.queue, self.backend, self.hub, config, self.registry, self.folders,
                                   self.warmup, self.broadcast_status)

    def feature_flags(self) -> dict[str, Any]:
        """Server flags: the websocket `feature_flags` reply and GET /features."""
        return {
            "supports_preview_metadata": True,
            "max_upload_size": self.config.max_upload_bytes,
            "nodegraph_version": __version__,
            "websocket_prompts": True,
            "preview_method": self.config.preview_method,  # the default; a prompt may ask for another
        }

    def queue_status(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def broadcast_status(self) -> None:
        self.hub.send("status", {"status": self.queue_status()})

    async def start(self) -> None:
        for folder in (self.folders.input_dir, self.folders.output_dir, self.folders.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        await self.backend.start(self.queue.wake.set)
        self.worker.start()
        if self.queue.pending():
            self.queue.wake.set()

    async def shutdown(self) -> None:
        """First stage of stopping: record or interrupt the running prompt, close the websockets (open sockets
        would otherwise hold the server's shutdown until their handlers end)."""
        await self.worker.stop()
        await self.hub.close_all()

    async def cleanup(self) -> None:
        await self.store.close()
        await self.backend.close()


STATE: web.AppKey[ServerState] = web.AppKey("nodegraph_state", ServerState)
