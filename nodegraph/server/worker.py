"""The prompt worker: takes jobs from the queue (nodegraph/jobs.py) in order, runs them on the executor backend and
turns engine events into websocket messages.

The backend decides how many prompts run at once (`executors.py`): the local executor runs one at a time in this
process (node work on its own thread, so the server keeps answering); the Ray pool runs one per worker actor. Engine
events of each prompt go through one ordered pipeline: previews are JPEG-encoded on a thread (unless a remote worker
sent them encoded) while later events wait behind them, so clients see ComfyUI's order (executing -> progress /
previews -> executed).

Routing fixes ComfyUI's trap (#3503, #8395): a prompt queued without a client_id has ALL its execution messages
broadcast, not only progress and previews.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from ..engine import NodeRegistry, RunResult, Workflow, format_validation, validate_prompt
from ..engine.errors import execution_error, execution_interrupted, now_ms, traceback_of
from ..engine.folders import Folders
from ..engine.node import preview_method_of
from ..jobs import Job, JobQueue
from ..previews import PNG_FORMAT, Preview, encode_png, encode_preview, preview_metadata
from ..warmup import Warmup
from .config import ServerConfig
from .executors import PromptBackend
from .hub import Hub
from .store import Finished

log = logging.getLogger(__name__)

JOB_STATUS = {"success": "completed", "error": "failed", "interrupted": "cancelled"}


class PromptWorker:
    """Takes jobs from the queue as the backend has slots for them, runs each and records how it ended."""

    def __init__(self, queue: JobQueue, backend: PromptBackend, hub: Hub, config: ServerConfig,
                 registry: NodeRegistry, folders: Folders, warmup: Warmup,
                 broadcast_status: Callable[[], None]):
        self.queue = queue
        self.backend = backend
        self.hub = hub
        self.config = config
        self.registry = registry
        self.folders = folders
        self.warmup = warmup
        self.broadcast_status = broadcast_status  # the queue's size changed: tell every client
        self._free_flags: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    # --- control -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="nodegraph-prompt-worker")

    async def stop(self, grace: float = 3.0) -> None:
        """Interrupt the running prompts and wait (a little) for them to be recorded. A node that ignores the
        interrupt is left behind (its thread is a daemon: it cannot hold the process) and its prompt is recorded
        at once as failed, "server stopped while running", naming the node it was in."""
        self._stopping = True
        self.backend.interrupt(None)
        self.queue.wake.set()
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        if tasks:
            await asyncio.wait([asyncio.shield(t) for t in tasks], timeout=grace)
            stuck = [t for t in tasks if not t.done()]
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=1.0)
        for job in self.queue.running():
            try:
                await self.queue.record_stopped(job)
            except Exception:
                log.exception("prompt %s: could not record it as stopped", job.prompt_id)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt(s); with a prompt_id only that prompt, if it is running."""
        running = self.queue.running()
        if not running or (prompt_id is not None and not self.queue.is_running(prompt_id)):
            return False
        return self.backend.interrupt(prompt_id)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Free memory after the current prompt (at once when idle, or when the backend frees between prompts
        by itself)."""
        self._free_flags["unload_models"] = self._free_flags.get("unload_models", False) or unload_models
        self._free_flags["free_memory"] = self._free_flags.get("free_memory", False) or free_memory
        self.queue.wake.set()

    # --- the loop ------------------------------------------------------------------------------------------------

    async def _run_forever(self) -> None:
        wake = self.queue.wake
        while not self._stopping:
            wake.clear()
            if not self._running or self.backend.free_while_running:
                await self._apply_free()
            # In queue order: the first job that gets no slot holds the ones behind it.
            while not self._stopping and (taken := await self.queue.take(self.backend.reserve)) is not None:
                job, slot = taken
                task = asyncio.create_task(self._run_guarded(job, slot), name=f"nodegraph-prompt-{job.prompt_id}")
                self._running[job.prompt_id] = task
            await wake.wait()

    async def _run_guarded(self, job: Job, slot: Any) -> None:
        try:
            await self._run_one(job, slot)
        except Exception:  # the worker must survive anything a prompt does
            log.exception("prompt %s: recording failed", job.prompt_id)
        finally:
            self._running.pop(job.prompt_id, None)
            self.queue.wake.set()

    async def _apply_free(self) -> None:
        if not self._free_flags:
            return
        flags, self._free_flags = self._free_flags, {}
        await self.backend.free(flags.get("unload_models", False), flags.get("free_memory", False))

    async def _run_one(self, job: Job, slot: Any) -> None:
        pid = job.prompt_id
        # The preview method this run uses: the prompt's own request, else the server's --preview-method.
        job.preview_method = preview_method_of(job.extra_data, self.config.preview_method)
        pipeline = _EventPipeline(self, job)
        pipeline.start()
        handed_over = False  # the backend releases the slot once it runs the prompt; before that, we do
        try:
            if job.workflow is None:
                job.workflow = await self._revalidate(job, pipeline)
            if job.workflow is None:
                result_status, outputs, timings = "error", {}, {}
                error = pipeline.last_error
            else:
                handed_over = True
                imports = await self._wait_for_imports()
                if self._stopping:  # stopped while it waited for the imports: it never started
                    self.backend.release(slot)
                    result = RunResult(pid, "interrupted", error=execution_interrupted())
                    pipeline.on_event("execution_interrupted", {"prompt_id": pid, **result.error})
                else:
                    result = await self.backend.run(job, pipeline.on_event, slot)
                result_status, outputs, timings, error = result.status, result.outputs, result.timings, result.error
                if imports:
                    timings = {"imports": imports, **timings}
        except Exception as exc:
            log.exception("prompt %s: the executor failed", pid)
            error = _failure(pid, exc, "the executor failed")
            error["node_id"], error["node_type"] = job.node, job.node_type  # the node whose output or display failed
            pipeline.on_event("execution_error", error)
            result_status, outputs, timings = "error", {}, {}
        if not handed_over:
            self.backend.release(slot)
        await pipeline.close()
        done = Finished(
            status_str="success" if result_status == "success" else "error",
            job_status=JOB_STATUS.get(result_status, "failed"),
            outputs=outputs,
            messages=pipeline.history_messages,
            timings={nid: round(seconds, 6) for nid, seconds in timings.items()},
            error=error,
        )
        try:
            await self.queue.finish(job, done)
            self.hub.send("executing", {"node": None, "prompt_id": pid}, job.client)
        finally:
            if handed_over:
                self.backend.done(slot)
        self.broadcast_status()

    async def _wait_for_imports(self) -> float:
        """Seconds this prompt waited for the background import of torch & co. (nodegraph/warmup.py), so that
        the wait is reported as `imports` rather than inside the first model node's time."""
        warmup = self.warmup
        started = time.perf_counter()
        # Polled: a thread blocked in wait() would hold the server's exit; a stop ends the wait.
        while warmup.state == "importing" and not self._stopping:
            await asyncio.sleep(0.05)
        return time.perf_counter() - started if warmup.state == "done" and time.perf_counter() > started + 0.01 else 0.0

    async def _revalidate(self, job: Job, pipeline: _EventPipeline) -> Workflow | None:
        """A prompt queued before a restart: validate again (models or inputs may have changed meanwhile)."""
        item = job.item
        result = await asyncio.get_running_loop().run_in_executor(
            None, lambda: validate_prompt(item.prompt, self.registry, self.folders, item.outputs_to_execute)
        )
        if result.ok and result.workflow is not None:
            return result.workflow
        pipeline.on_event("execution_start", {"prompt_id": item.prompt_id, "timestamp": now_ms()})
        error = {
            **_failure(item.prompt_id, None, format_validation(result, item.prompt)),
            "exception_type": "ValidationError",
        }
        pipeline.on_event("execution_error", error)
        return None


def _failure(prompt_id: str, exc: BaseException | None, message: str) -> dict[str, Any]:
    return execution_error(
        f"{message}: {exc}" if exc is not None else message,
        type(exc).__qualname__ if exc is not None else "Exception",
        traceback=traceback_of(exc), prompt_id=prompt_id, timestamp=now_ms(),
    )


class _EventPipeline:
    """Engine events of one prompt -> websocket messages, in order; keeps the history's status messages."""

    def __init__(self, worker: PromptWorker, job: Job):
        self.worker = worker
        self.hub = worker.hub
        self.job = job
        self.prompt_id = job.prompt_id
        self.target = job.client
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self.history_messages: list[list[Any]] = []
        self.last_error: dict[str, Any] | None = None
        self.nodes: dict[str, dict[str, Any]] = {}  # progress_state
        self.running: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain())

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        if event.startswith("execution_"):
            data.setdefault("prompt_id", self.prompt_id)
            data.setdefault("timestamp", now_ms())
            self.history_messages.append([event, data])
            if event == "execution_error":
                self.last_error = data
        self.queue.put_nowait((event, data))

    async def close(self) -> None:
        self.queue.put_nowait(None)
        if self._task is not None:
            await self._task

    async def _drain(self) -> None:
        while (item := await self.queue.get()) is not None:
            try:
                await self._dispatch(*item)
            except Exception:
                log.exception("prompt %s: could not deliver %s", self.prompt_id, item[0])

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        hub, target = self.hub, self.target
        if event == "preview" and data.get("format") == "PNG":  # SaveImageWebsocket: full-size PNG frames
            png = data.get("png") or await asyncio.get_running_loop().run_in_executor(None, encode_png, data["image"])
            meta = preview_metadata(self.prompt_id, data["node"], "image/png")
            hub.send_preview(Preview(png, meta, PNG_FORMAT), target)
            return
        if event == "preview":
            jpeg = data.get("jpeg")  # a remote worker encodes its previews before sending them
            if jpeg is None:
                size = self.worker.config.preview_size
                jpeg = await asyncio.get_running_loop().run_in_executor(None, encode_preview, data["image"], size)
            hub.send_preview(Preview(jpeg, preview_metadata(self.prompt_id, data["node"])), target)
            return
        if event == "executing":
            self._finish_running("finished")
            self.running = data["node"]
            self.job.node = data["node"]
            hub.send(event, data, target)
            self._set_state(data["node"], "running", 0, 1)
            return
        if event == "progress":
            hub.send(event, data, target)
            self._set_state(data["node"], "running", data["value"], data["max"])
            return
        if event in ("execution_success", "execution_error", "execution_interrupted"):
            self._finish_running("finished" if event == "execution_success" else "error")
        hub.send(event, data, target)

    def _finish_running(self, state: str) -> None:
        if self.running is not None:
            node = self.nodes[self.running]
            self._set_state(self.running, state, node["max"] if state == "finished" else node["value"], node["max"])
            self.running = None

    def _set_state(self, node_id: str, state: str, value: int, maximum: int) -> None:
        self.nodes[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        # Only the node that changed: resending every node so far made a long chain quadratic in time and bytes.
        # ComfyUI broadcasts it: one prompt runs at a time there. Where prompts run side by side, it goes to the
        # prompt's own client like `progress` (to everyone when the prompt has none): N clients no longer each get
        # every prompt's per-step state, N^2 messages per step that the server had to encode and send.
        side_by_side = self.worker.config.concurrency > 1 or self.worker.config.executor == "ray"
        self.hub.send("progress_state", {"prompt_id": self.prompt_id, "nodes": {node_id: self.nodes[node_id]}},
                      self.target if side_by_side else None)
