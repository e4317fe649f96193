"""One Ray worker: engine Executors (one per slot, `concurrency` of them) sharing one output cache and (through the
node packs) one model cache, on one device (the GPU Ray assigned it, or the CPU).

With `concurrency` N > 1 the worker runs up to N prompts side by side, each on its own executor (so its own node
thread and its own interrupt flag), and `max_batch` goes into the folders' settings so that the worker's model cache
hands each sampling prompt a batching view of the UNet: their UNet calls share forwards
(nodegraph_nodes/diffusion/batching.py), exactly as `serve --concurrency` does in one process.

The server starts a prompt with `run()` and long-polls its events with `poll()`; this is an async actor, so polls,
`interrupt()` and `info()` are answered while nodes run on the executor's own thread. Previews are JPEG-encoded here,
so only bytes cross the network, and output files travel as bytes (see `outputs`) when this worker does not share
the server's output folder: it runs on another node, or it was given a folder of its own.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray

from ..engine import Executor, Folders, NullCache, OutputCache, Runtime, Workflow
from ..engine.limits import Limits
from ..previews import encode_png, encode_preview
from .outputs import collect_files


@dataclasses.dataclass
class _Stream:
    """The events of one prompt not yet fetched by the server."""

    events: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    done: bool = False


# The keys of `load()`: what the pool keeps of a worker between prompts (for scheduling and GET /workers).
LOAD_KEYS = ("models", "loaded_bytes", "file_reads", "prompts_run", "batching")


class PromptActor:
    """Runs up to `concurrency` prompts at a time (default 1). `options`: server_node (the server's Ray node id),
    output_dir (a folder of its own; files then travel as bytes), preview_size, cache ("lru" | "none"),
    cache_entries, max_ui_bytes, concurrency, max_batch (rows of one shared UNet forward, with concurrency > 1)."""

    def __init__(self, folders: Folders, options: dict[str, Any]):
        self.node_id = ray.get_runtime_context().get_node_id()
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        own_dir = options.get("output_dir")
        self.ship_outputs = own_dir is not None or self.node_id != options.get("server_node")
        if self.ship_outputs:
            base = Path(own_dir) if own_dir is not None else Path(tempfile.mkdtemp(prefix="nodegraph-worker-"))
            folders = dataclasses.replace(folders, output_dir=base / "output", temp_dir=base / "temp")
        # Ray makes the assigned GPU the only visible one; without one, the model cache must not reach for CUDA.
        settings = {**folders.settings, "device": "cuda" if self.gpu_ids else "cpu"}
        self.concurrency = max(1, int(options.get("concurrency") or 1))
        if self.concurrency > 1:  # read by the model cache (Runtime.max_batch)
            settings["max_batch"] = int(options.get("max_batch") or settings.get("max_batch") or 16)
        self.folders = dataclasses.replace(folders, settings=settings)
        cache = NullCache() if options.get("cache") == "none" else OutputCache(
            max_entries=int(options.get("cache_entries", 512)))
        limits = Limits(max_ui_bytes=int(options["max_ui_bytes"])) if options.get("max_ui_bytes") else None
        # One executor per slot, all on the one output cache and the one runtime (so one model cache).
        self.runtime = Runtime(self.folders)
        self.executors = [Executor(self.runtime, cache=cache, limits=limits) for _ in range(self.concurrency)]
        self._idle = list(self.executors)
        self._running: dict[str, Executor] = {}  # prompt id -> the executor running it
        self.preview_size = int(options.get("preview_size", 512))
        self.prompts_run = 0
        self._streams: dict[str, _Stream] = {}
        self._interrupts: set[str] = set()

    # --- queries -------------------------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """What the scheduler wants to know: model files held, their bytes, how many file reads so far."""
        models: set[str] = set()
        loaded_bytes = file_reads = 0
        batching = {"forwards": 0, "shared_forwards": 0, "rows": 0}
        for owner in self.runtime.owners():
            stats = owner.stats()
            models.update(entry["file"] for entry in stats.get("loaded", []) if "file" in entry)
            loaded_bytes += int(stats.get("bytes_total", 0))
            file_reads += int(stats.get("file_reads", 0))
            for name, value in (stats.get("batching") or {}).items():
                batching[name] = batching.get(name, 0) + int(value)
        return {"models": sorted(models), "loaded_bytes": loaded_bytes, "file_reads": file_reads,
                "prompts_run": self.prompts_run, "batching": batching}

    async def info(self) -> dict[str, Any]:
        """Where this worker runs and what it holds (the server's `GET /workers`)."""
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node_id": self.node_id,
            "device": f"cuda ({', '.join(self.gpu_ids)})" if self.gpu_ids else "cpu",
            "concurrency": self.concurrency,
            "ship_outputs": self.ship_outputs,
            "output_dir": str(self.folders.output_dir),
            **self.load(),
        }

    async def ping(self) -> bool:
        return True

    # --- running -------------------------------------------------------------------------------------------------

    def _stream(self, prompt_id: str) -> _Stream:
        return self._streams.setdefault(prompt_id, _Stream())

    async def run(self, prompt_id: str, workflow: Workflow, extra_data: dict[str, Any]) -> dict[str, Any]:
        """Run a prompt to its end; events wait in its stream for `poll`. Returns the result without the node
        values (those stay here, in the output cache)."""
        stream = self._stream(prompt_id)

        def on_event(event: str, data: dict[str, Any]) -> None:
            if event == "preview" and data.get("format") == "PNG":
                data = {"node": data["node"], "prompt_id": prompt_id, "format": "PNG", "png": encode_png(data["image"])}
            elif event == "preview":
                data = {"node": data["node"], "prompt_id": prompt_id,
                        "jpeg": encode_preview(data["image"], self.preview_size)}
            elif event == "executed" and self.ship_outputs:
                data = {**data, "files": collect_files(data["output"], self.folders)}
            stream.events.append((event, data))
            stream.ready.set()

        if not self._idle:  # the pool reserves slots before it calls: more calls than slots is a pool bug
            raise RuntimeError(f"worker busy: {len(self._running)} prompts running, concurrency {self.concurrency}")
        executor = self._idle.pop(0)
        self._running[prompt_id] = executor
        task = asyncio.ensure_future(executor.run(workflow, prompt_id, extra_data=extra_data, on_event=on_event))
        try:
            await asyncio.sleep(0)  # the run has started (and cleared the interrupt flag): apply an early interrupt
            if prompt_id in self._interrupts:
                executor.interrupt()
            result = await task
        finally:
            self._running.pop(prompt_id, None)
            self._idle.append(executor)
            self._interrupts.discard(prompt_id)
            self.prompts_run += 1
            stream.done = True
            stream.ready.set()
        return {
            "status": result.status,
            "outputs": result.outputs,
            "timings": result.timings,
            "executed": result.executed,
            "cached": result.cached,
            "error": result.error,
            "load": self.load(),
        }

    async def poll(self, prompt_id: str, wait: float) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """The prompt's events since the last poll, waiting up to `wait` seconds for one; and whether it ended."""
        stream = self._stream(prompt_id)
        if not stream.events and not stream.done:
            try:
                await asyncio.wait_for(stream.ready.wait(), wait)
            except asyncio.TimeoutError:
                pass
        stream.ready.clear()
        events, stream.events = stream.events, []
        if stream.done:
            del self._streams[prompt_id]
        return events, stream.done

    async def interrupt(self, prompt_id: str) -> None:
        """Interrupt the prompt if it runs here (or as soon as it starts: the call may overtake `run`); only its own
        executor is told, so the worker's other prompts go on."""
        self._interrupts.add(prompt_id)
        executor = self._running.get(prompt_id)
        if executor is not None and executor.running_prompt == prompt_id:
            executor.interrupt()

    async def free(self, unload_models: bool, free_memory: bool) -> None:
        """/free on this worker; models in use by a running node are kept (the model cache skips them)."""
        await self.executors[0].free(unload_models, free_memory)  # the output cache and model owners are shared
