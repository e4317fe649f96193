"""The prompt worker: runs queued prompts one at a time and turns engine events into websocket messages.

The executor runs on the event loop but does node work on its own thread, so the server keeps answering while a
prompt runs. Engine events go through one ordered pipeline per prompt: previews are JPEG-encoded on a thread while
later events wait behind them, so clients see ComfyUI's order (executing -> progress / previews -> executed).

Routing fixes ComfyUI's trap (#3503, #8395): a prompt queued without a client_id has ALL its execution messages
broadcast, not only progress and previews.
"""
from __future__ import annotations

import asyncio
import logging
import traceback
from typing import TYPE_CHECKING, Any

from ..engine import Workflow, format_validation, resources, validate_prompt
from .previews import Preview, encode_preview, preview_metadata
from .store import Finished, QueueItem, now_ms

if TYPE_CHECKING:
    from .state import ServerState

log = logging.getLogger(__name__)

JOB_STATUS = {"success": "completed", "error": "failed", "interrupted": "cancelled"}


class PromptWorker:
    def __init__(self, state: ServerState):
        self.state = state
        self.workflows: dict[str, Workflow] = {}  # validated at submission (re-validated after a restart)
        self.sensitive: dict[str, dict[str, Any]] = {}  # secrets from extra_data: memory only, never stored
        self.wake = asyncio.Event()
        self.current_node: str | None = None
        self._free_flags: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- control -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="nodegraph-prompt-worker")

    async def stop(self, grace: float = 10.0) -> None:
        """Interrupt the running prompt and wait (a little) for it to be recorded; a node that ignores the interrupt
        is left behind and its prompt is recorded as failed at the next start."""
        self._stopping = True
        self.state.executor.interrupt()
        self.wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except asyncio.TimeoutError:
                self._task.cancel()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt; with a prompt_id only if that prompt is the one running."""
        running = self.state.store.running
        if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
            return False
        self.state.executor.interrupt()
        return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Free memory after the current prompt (at once when idle)."""
        self._free_flags["unload_models"] = self._free_flags.get("unload_models", False) or unload_models
        self._free_flags["free_memory"] = self._free_flags.get("free_memory", False) or free_memory
        self.wake.set()

    def forget(self, prompt_ids: list[str]) -> None:
        for pid in prompt_ids:
            self.workflows.pop(pid, None)
            self.sensitive.pop(pid, None)

    # --- the loop ------------------------------------------------------------------------------------------------

    async def _run_forever(self) -> None:
        store = self.state.store
        while not self._stopping:
            self.wake.clear()
            item = await store.take_next()
            if item is None:
                await self._apply_free()
                await self.wake.wait()
                continue
            try:
                await self._run_one(item)
            except Exception:  # the worker must survive anything a prompt does
                log.exception("prompt %s: recording failed", item.prompt_id)
            await self._apply_free()

    async def _apply_free(self) -> None:
        if not self._free_flags:
            return
        flags, self._free_flags = self._free_flags, {}
        if flags.get("free_memory"):
            self.state.executor.cache.clear()
        owners = resources.owners()
        if owners:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: [owner.free(**flags) for owner in owners]
            )

    async def _run_one(self, item: QueueItem) -> None:
        state = self.state
        pid = item.prompt_id
        target = item.extra_data.get("client_id") or None
        extra_data = {**item.extra_data, **self.sensitive.pop(pid, {})}
        workflow = self.workflows.pop(pid, None)
        pipeline = _EventPipeline(self, pid, target)
        pipeline.start()
        try:
            if workflow is None:
                workflow = await self._revalidate(item, pipeline)
            if workflow is None:
                result_status, outputs, timings = "error", {}, {}
                error = pipeline.last_error
            else:
                result = await state.executor.run(workflow, pid, extra_data=extra_data, on_event=pipeline.on_event)
                result_status, outputs, timings, error = result.status, result.outputs, result.timings, result.error
        except Exception as exc:
            log.exception("prompt %s: the executor failed", pid)
            error = _failure(pid, exc, "the executor failed")
            pipeline.on_event("execution_error", error)
            result_status, outputs, timings = "error", {}, {}
        await pipeline.close()
        done = Finished(
            status_str="success" if result_status == "success" else "error",
            job_status=JOB_STATUS.get(result_status, "failed"),
            outputs=outputs,
            messages=pipeline.history_messages,
            timings={nid: round(seconds, 6) for nid, seconds in timings.items()},
            error=error,
        )
        await state.store.finish(item, done)
        self.current_node = None
        state.hub.send("executing", {"node": None, "prompt_id": pid}, target)
        state.broadcast_status()

    async def _revalidate(self, item: QueueItem, pipeline: _EventPipeline) -> Workflow | None:
        """A prompt queued before a restart: validate again (models or inputs may have changed meanwhile)."""
        state = self.state
        result = await asyncio.get_running_loop().run_in_executor(
            None, lambda: validate_prompt(item.prompt, state.registry, state.folders, item.outputs_to_execute)
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
    return {
        "prompt_id": prompt_id,
        "node_id": None,
        "node_type": None,
        "executed": [],
        "exception_message": f"{message}: {exc}" if exc is not None else message,
        "exception_type": type(exc).__qualname__ if exc is not None else "Exception",
        "traceback": traceback.format_tb(exc.__traceback__) if exc is not None else [],
        "current_inputs": {},
        "current_outputs": [],
        "timestamp": now_ms(),
    }


class _EventPipeline:
    """Engine events of one prompt -> websocket messages, in order; keeps the history's status messages."""

    def __init__(self, worker: PromptWorker, prompt_id: str, target: str | None):
        self.worker = worker
        self.hub = worker.state.hub
        self.prompt_id = prompt_id
        self.target = target
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
        if event == "preview":
            size = self.worker.state.config.preview_size
            jpeg = await asyncio.get_running_loop().run_in_executor(None, encode_preview, data["image"], size)
            hub.send_preview(Preview(jpeg, preview_metadata(self.prompt_id, data["node"])), target)
            return
        if event == "executing":
            self._finish_running("finished")
            self.running = data["node"]
            self.worker.current_node = data["node"]
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
        self.hub.send("progress_state", {"prompt_id": self.prompt_id, "nodes": dict(self.nodes)})
