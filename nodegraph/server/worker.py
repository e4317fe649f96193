"""The prompt worker: takes queued prompts in order, runs them on the executor backend and turns engine events into
websocket messages.

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
from typing import TYPE_CHECKING, Any

from ..engine import RunResult, Workflow, format_validation, validate_prompt
from ..engine.errors import execution_error, traceback_of
from ..engine.node import preview_method_of
from .executors import Job
from .previews import PNG_FORMAT, Preview, encode_png, encode_preview, preview_metadata
from .store import Finished, QueueItem, now_ms

if TYPE_CHECKING:
    from .state import ServerState

log = logging.getLogger(__name__)

JOB_STATUS = {"success": "completed", "error": "failed", "interrupted": "cancelled"}


class PromptWorker:
    def __init__(self, state: ServerState):
        self.state = state
        self.backend = state.backend
        self.workflows: dict[str, Workflow] = {}  # validated at submission (re-validated after a restart)
        self.sensitive: dict[str, dict[str, Any]] = {}  # secrets from extra_data: memory only, never stored
        self.wake = asyncio.Event()
        self.current_nodes: dict[str, str] = {}  # running prompt id -> the node it runs now
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
        self.wake.set()
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        if tasks:
            await asyncio.wait([asyncio.shield(t) for t in tasks], timeout=grace)
            stuck = [t for t in tasks if not t.done()]
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=1.0)
        store = self.state.store
        for item in list(store.running_items.values()):
            node = self.current_nodes.get(item.prompt_id)
            try:
                await store.record_stopped(item, node, self._node_type(item, node))
            except Exception:
                log.exception("prompt %s: could not record it as stopped", item.prompt_id)

    @staticmethod
    def _node_type(item: QueueItem, node: str | None) -> str | None:
        entry = item.prompt.get(node) if node is not None and isinstance(item.prompt, dict) else None
        return entry.get("class_type") if isinstance(entry, dict) else None

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt(s); with a prompt_id only that prompt, if it is running."""
        running = self.state.store.running_items
        if not running or (prompt_id is not None and prompt_id not in running):
            return False
        return self.backend.interrupt(prompt_id)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Free memory after the current prompt (at once when idle, or when the backend frees between prompts
        by itself)."""
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
            if not self._running or self.backend.free_while_running:
                await self._apply_free()
            for item in store.pending_sorted():
                if self._stopping or item.prompt_id not in store.pending:
                    break  # deleted meanwhile: look again from the top
                slot = self.backend.reserve(item.prompt)
                if slot is None:
                    break  # in queue order: the first prompt that cannot start holds the ones behind it
                await store.mark_running(item)
                task = asyncio.create_task(self._run_guarded(item, slot), name=f"nodegraph-prompt-{item.prompt_id}")
                self._running[item.prompt_id] = task
            await self.wake.wait()

    async def _run_guarded(self, item: QueueItem, slot: Any) -> None:
        try:
            await self._run_one(item, slot)
        except Exception:  # the worker must survive anything a prompt does
            log.exception("prompt %s: recording failed", item.prompt_id)
        finally:
            self._running.pop(item.prompt_id, None)
            self.wake.set()

    async def _apply_free(self) -> None:
        if not self._free_flags:
            return
        flags, self._free_flags = self._free_flags, {}
        await self.backend.free(flags.get("unload_models", False), flags.get("free_memory", False))

    async def _run_one(self, item: QueueItem, slot: Any) -> None:
        state = self.state
        pid = item.prompt_id
        target = item.extra_data.get("client_id") or None
        extra_data = {**item.extra_data, **self.sensitive.pop(pid, {})}
        # The preview method this run uses: the prompt's own request, else the server's --preview-method.
        extra_data["preview_method"] = preview_method_of(extra_data, state.config.preview_method)
        workflow = self.workflows.pop(pid, None)
        pipeline = _EventPipeline(self, pid, target)
        pipeline.start()
        handed_over = False  # the backend releases the slot once it runs the prompt; before that, we do
        try:
            if workflow is None:
                workflow = await self._revalidate(item, pipeline)
            if workflow is None:
                result_status, outputs, timings = "error", {}, {}
                error = pipeline.last_error
            else:
                handed_over = True
                imports = await self._wait_for_imports()
                if self._stopping:  # stopped while it waited for the imports: it never started
                    self.backend.release(slot)
                    result = RunResult(pid, "interrupted", error={"node_id": None, "node_type": None, "executed": []})
                    pipeline.on_event("execution_interrupted", {"prompt_id": pid, **result.error})
                else:
                    result = await self.backend.run(Job(pid, workflow, extra_data), pipeline.on_event, slot)
                result_status, outputs, timings, error = result.status, result.outputs, result.timings, result.error
                if imports:
                    timings = {"imports": imports, **timings}
        except Exception as exc:
            log.exception("prompt %s: the executor failed", pid)
            error = _failure(pid, exc, "the executor failed")
            node = self.current_nodes.get(pid)  # name the node whose output or display failed
            error["node_id"], error["node_type"] = node, self._node_type(item, node)
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
        await state.store.finish(item, done)
        self.current_nodes.pop(pid, None)
        state.hub.send("executing", {"node": None, "prompt_id": pid}, target)
        state.broadcast_status()

    async def _wait_for_imports(self) -> float:
        """Seconds this prompt waited for the background import of torch & co. (nodegraph/warmup.py), so that
        the wait is reported as `imports` rather than inside the first model node's time."""
        warmup = self.state.warmup
        started = time.perf_counter()
        # Polled: a thread blocked in wait() would hold the server's exit; a stop ends the wait.
        while warmup.state == "importing" and not self._stopping:
            await asyncio.sleep(0.05)
        return time.perf_counter() - started if warmup.state == "done" and time.perf_counter() > started + 0.01 else 0.0

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
    return execution_error(
        f"{message}: {exc}" if exc is not None else message,
        type(exc).__qualname__ if exc is not None else "Exception",
        traceback=traceback_of(exc), prompt_id=prompt_id, timestamp=now_ms(),
    )


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
        if event == "preview" and data.get("format") == "PNG":  # SaveImageWebsocket: full-size PNG frames
            png = data.get("png") or await asyncio.get_running_loop().run_in_executor(None, encode_png, data["image"])
            meta = preview_metadata(self.prompt_id, data["node"], "image/png")
            hub.send_preview(Preview(png, meta, PNG_FORMAT), target)
            return
        if event == "preview":
            jpeg = data.get("jpeg")  # a remote worker encodes its previews before sending them
            if jpeg is None:
                size = self.worker.state.config.preview_size
                jpeg = await asyncio.get_running_loop().run_in_executor(None, encode_preview, data["image"], size)
            hub.send_preview(Preview(jpeg, preview_metadata(self.prompt_id, data["node"])), target)
            return
        if event == "executing":
            self._finish_running("finished")
            self.running = data["node"]
            self.worker.current_nodes[self.prompt_id] = data["node"]
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
        self.hub.send("progress_state", {"prompt_id": self.prompt_id, "nodes": {node_id: self.nodes[node_id]}})
