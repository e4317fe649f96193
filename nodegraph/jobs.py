"""One queued prompt as one object (`Job`) and the one service that owns the queue (`JobQueue`).

A prompt has parts with different lives: the queue item (stored in SQLite, survives a restart), the workflow
validated at submission (memory only: it is validated again after a restart), the credentials taken out of
extra_data (memory only, never stored, listed or echoed) and the websocket client its messages go to. `Job` keeps them
together from submission to the end of its run, and `JobQueue` is the only place a job enters (`enqueue`), leaves
the queue to run (`take`) and ends (`finish`, or `remove` while it is still pending).

This module sits below the server and the Ray executor (`nodegraph.distributed`): both import it, it imports neither.
The durable part (`Store`, nodegraph/server/store.py) is handed in; only the methods named in `QueueStore` are used.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from .engine import Workflow


class DuplicatePrompt(Exception):
    """A client-chosen prompt_id that is already queued or in the history."""


@dataclass
class QueueItem:
    """A queued prompt as ComfyUI's queue tuple holds it (without the sensitive slot, which is never stored)."""

    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    seq: int = 0
    start_time: int | None = None

    @property
    def create_time(self) -> int:
        return int(self.extra_data.get("create_time") or 0)

    @property
    def workflow_id(self) -> str | None:
        workflow = (self.extra_data.get("extra_pnginfo") or {}).get("workflow")
        wid = workflow.get("id") if isinstance(workflow, dict) else None
        return str(wid) if wid is not None else None

    def wire(self) -> list[Any]:
        """`[number, prompt_id, prompt, extra_data, outputs_to_execute]`, as GET /queue and history show it."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]

    def sort_key(self) -> tuple[float, int]:
        return (float(self.number), self.seq)


@dataclass(eq=False)
class Job:
    """One prompt from submission to the end of its run: what is stored, what is not, and where it stands."""

    item: QueueItem
    # Validated at submission; None for a prompt queued before a restart (validated again before it runs).
    workflow: Workflow | None = None
    secrets: dict[str, Any] = field(default_factory=dict)  # credentials from extra_data: memory only, never stored
    preview_method: str | None = None  # decided when the run starts (the prompt's request, else the server's)
    node: str | None = None  # the node it runs now

    @property
    def prompt_id(self) -> str:
        return self.item.prompt_id

    @property
    def client(self) -> str | None:
        """The websocket client its messages go to (None: broadcast to every client)."""
        return self.item.extra_data.get("client_id") or None

    @property
    def extra_data(self) -> dict[str, Any]:
        """What the run gets: the stored extra_data, the credentials and the preview method."""
        data = {**self.item.extra_data, **self.secrets}
        if self.preview_method is not None:
            data["preview_method"] = self.preview_method
        return data

    @property
    def node_type(self) -> str | None:
        """The class_type of the node it runs now."""
        prompt = self.item.prompt
        entry = prompt.get(self.node) if self.node is not None and isinstance(prompt, dict) else None
        return entry.get("class_type") if isinstance(entry, dict) else None


class QueueStore(Protocol):
    """What `JobQueue` needs from the durable queue (nodegraph/server/store.py `Store`)."""

    pending: dict[str, QueueItem]
    running_items: dict[str, QueueItem]

    def next_number(self, front: bool) -> int: ...
    def contains(self, prompt_id: str) -> bool: ...
    async def add(self, item: QueueItem) -> None: ...
    def pending_sorted(self) -> list[QueueItem]: ...
    def queue_remaining(self) -> int: ...
    async def mark_running(self, item: QueueItem) -> None: ...
    async def delete_pending(self, prompt_ids: Iterable[str]) -> list[str]: ...
    async def clear_pending(self) -> list[str]: ...
    async def finish(self, item: QueueItem, done: Any) -> None: ...
    async def record_stopped(self, item: QueueItem, node_id: str | None = None,
                             node_type: str | None = None) -> None: ...


class JobQueue:
    """The queue service: jobs enter with `enqueue`, start with `take`, end with `finish` (or leave with `remove`).

    The store keeps the items (durable); this keeps the jobs' memory-only parts beside them. `wake` is the prompt
    worker's doorbell: set whenever a job may be able to start (a job queued, a slot freed).
    """

    def __init__(self, store: QueueStore, on_client: Callable[[str], None] = lambda sid: None):
        self.store = store
        self.on_client = on_client  # a job names a client: keep its messages until it connects (Hub.reserve)
        self.wake = asyncio.Event()
        self._jobs: dict[str, Job] = {}  # pending jobs submitted in this process, and every running job

    # --- reading -------------------------------------------------------------------------------------------------

    def next_number(self, front: bool) -> int:
        return self.store.next_number(front)

    def remaining(self) -> int:
        return self.store.queue_remaining()

    def pending(self) -> list[QueueItem]:
        return self.store.pending_sorted()

    def running(self) -> list[Job]:
        """The running jobs, in start order."""
        return [self._jobs[pid] for pid in self.store.running_items if pid in self._jobs]

    def is_running(self, prompt_id: str) -> bool:
        return prompt_id in self.store.running_items

    def node_of(self, prompt_id: str) -> str | None:
        """The node a running job runs now."""
        job = self._jobs.get(prompt_id)
        return job.node if job is not None and self.is_running(prompt_id) else None

    # --- changing ------------------------------------------------------------------------------------------------

    async def enqueue(self, job: Job) -> None:
        """Commit, then queue; DuplicatePrompt if the id is taken (by the queue or the history)."""
        pid = job.prompt_id
        # From this check to the store's insert nothing awaits, so the registrations below can only be this job's.
        if self.store.contains(pid):
            raise DuplicatePrompt(pid)
        self._jobs[pid] = job
        if job.client is not None:
            self.on_client(job.client)
        try:
            await self.store.add(job.item)
        except Exception:
            self._jobs.pop(pid, None)
            raise
        self.wake.set()

    async def take(self, reserve: Callable[[dict[str, Any]], Any | None]) -> tuple[Job, Any] | None:
        """The first pending job in queue order with the slot `reserve(prompt)` gave it, marked running; None when
        the queue is empty or that job gets no slot (in queue order: it holds the ones behind it)."""
        for item in self.store.pending_sorted():
            slot = reserve(item.prompt)
            if slot is None:
                return None
            job = self._jobs.get(item.prompt_id) or Job(item)  # queued before a restart: memory-only parts are gone
            self._jobs[item.prompt_id] = job
            await self.store.mark_running(item)
            return job, slot
        return None

    async def finish(self, job: Job, done: Any) -> None:
        """Record the job's end in the history and forget it."""
        try:
            await self.store.finish(job.item, done)
        finally:
            self._jobs.pop(job.prompt_id, None)

    async def record_stopped(self, job: Job) -> None:
        """Record a job still running when the server stops as failed, naming the node it was in."""
        try:
            await self.store.record_stopped(job.item, job.node, job.node_type)
        finally:
            self._jobs.pop(job.prompt_id, None)

    async def remove(self, prompt_ids: Iterable[str]) -> list[str]:
        """Take pending jobs out of the queue (running ones are untouched); the ids removed."""
        removed = await self.store.delete_pending(prompt_ids)
        self._forget(removed)
        return removed

    async def clear(self) -> list[str]:
        """Take every pending job out of the queue; the ids removed."""
        removed = await self.store.clear_pending()
        self._forget(removed)
        return removed

    def _forget(self, prompt_ids: Iterable[str]) -> None:
        for pid in prompt_ids:
            self._jobs.pop(pid, None)
