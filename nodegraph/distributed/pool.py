"""The server side of the Ray executor: a pool of worker actors (`actor.PromptActor`), one device each.

Each worker has `concurrency` slots (`serve --concurrency N`, default 1): it runs up to N prompts side by side on its
one device and model cache, their UNet calls batched together. The server keeps the one queue, the history and the
websocket clients; the pool hands each prompt to a worker with a free slot (model affinity, then the least-loaded
one: `scheduling`), streams the worker's events back by long polls, writes
output files a worker sent as bytes, and records the result through the prompt worker as the local executor does.

Faults: a worker that dies mid-prompt (its process killed, its node gone) is dropped, a replacement is started, and
each of its prompts is retried once on another worker (ahead of the queue); a second death reports the prompt
failed. The pool keeps its size: `workers=N` replaces dead actors; `workers=None` follows the cluster (one worker
per GPU, or per node when the cluster has no GPU), so workers join when nodes join. `resize()` changes the size at
run time.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import sys
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable, Protocol

import ray
from ray.exceptions import RayActorError

from ..engine import Folders, RunResult
from ..engine.errors import execution_error, execution_interrupted, now_ms
from ..engine.executor import EventCallback
from ..jobs import Job
from .actor import LOAD_KEYS, PromptActor
from .outputs import FileKey, rename_entries, store_files
from .scheduling import WorkerLoad, choose_worker, prompt_models

log = logging.getLogger(__name__)

POLL_WAIT = 1.0  # seconds one poll waits for an event before answering empty
MAINTAIN_EVERY = 2.0  # seconds between checks of the pool's size and of idle workers' health
PING_TIMEOUT = 10.0
MAX_ATTEMPTS = 2  # a prompt whose worker dies runs once more on another worker
KEEP_RECENT = 20  # prompt ids remembered per worker, and retried prompts remembered by the pool


class PoolConfig(Protocol):
    """What the pool reads of the server's configuration (`ServerConfig`, nodegraph/server/config.py, has all of
    it; the pool takes it by shape so that this package does not import the server)."""

    folders: Folders
    workers: int | None  # None: one per GPU of the cluster (per node without GPUs)
    concurrency: int
    ray_address: str | None
    worker_cpus: float
    worker_output_dir: Path | None
    preview_size: int
    cache: str
    cache_entries: int
    max_output_size_mb: float
    max_batch: int


class WorkerDied(Exception):
    """The actor running a prompt is gone (process killed, node lost)."""


@dataclasses.dataclass
class RayWorker:
    """The pool's view of one actor."""

    id: str
    actor: Any
    slots: int = 1  # prompts it runs at once (--concurrency)
    state: str = "starting"  # starting | idle (no slot taken) | busy (some or all slots taken)
    taken: int = 0  # slots reserved or running
    prompts: list[str] = dataclasses.field(default_factory=list)  # the prompts running on it now
    leaving: bool = False  # the pool shrank: retire it when its prompts end
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    load: dict[str, Any] = dataclasses.field(default_factory=dict)
    recent: deque[str] = dataclasses.field(default_factory=lambda: deque(maxlen=KEEP_RECENT))

    @property
    def prompt_id(self) -> str | None:
        """The first prompt running here (the only one with concurrency 1)."""
        return self.prompts[0] if self.prompts else None

    @property
    def free_slots(self) -> int:
        return self.slots - self.taken if self.state != "starting" and not self.leaving else 0

    def view(self) -> WorkerLoad:
        return WorkerLoad(self.id, frozenset(self.load.get("models", ())), int(self.load.get("loaded_bytes", 0)),
                          int(self.load.get("prompts_run", 0)), running=self.taken)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "slots": self.slots, "free_slots": self.free_slots,
                "prompt_id": self.prompt_id, "prompt_ids": list(self.prompts), "leaving": self.leaving,
                **self.info, **self.load, "recent_prompts": list(self.recent)}


def code_paths() -> str:
    """This process's import path minus the interpreter's own folders, as PYTHONPATH for the workers: they import
    the same nodegraph and node packs (a source checkout, test packs) that the server imported."""
    prefixes = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    paths = []
    for entry in sys.path:
        real = os.path.realpath(entry or os.getcwd())
        if os.path.isdir(real) and not real.startswith(prefixes) and real not in paths:
            paths.append(real)
    return os.pathsep.join(paths)


def absolute_folders(folders: Folders) -> Folders:
    """Workers do not share the server's working directory: give them absolute paths."""
    return dataclasses.replace(
        folders,
        models_dirs=[Path(p).absolute() for p in folders.models_dirs],
        input_dir=folders.input_dir.absolute(),
        output_dir=folders.output_dir.absolute(),
        temp_dir=folders.temp_dir.absolute(),
        extra_input_dirs=[Path(p).absolute() for p in folders.extra_input_dirs],
    )


class RayPool:
    """A `PromptBackend` (server/executors.py) whose slots are Ray actors; it runs `Job`s (nodegraph/jobs.py)."""

    name = "ray"
    free_while_running = True  # each worker frees between its own prompts; in-use models are kept

    def __init__(self, config: PoolConfig):
        self.config = config
        self.folders = absolute_folders(config.folders)
        self.workers: dict[str, RayWorker] = {}
        self.size: int | None = config.workers
        self.concurrency = max(1, int(config.concurrency))  # slots per worker
        self.retries = 0
        self.deaths = 0
        self.retried: OrderedDict[str, list[str]] = OrderedDict()  # prompt id -> worker ids it ran on
        self._numbers = itertools.count(1)
        self._on_capacity: Callable[[], None] = lambda: None
        self._freed = asyncio.Event()
        self._retry_waiters = 0
        self._waiting: set[str] = set()  # prompts waiting for a worker to retry on
        self._cancelled: set[str] = set()  # ... and interrupted meanwhile
        self._owns_ray = False
        self._gpu = False
        self._server_node = ""
        self._remote: Any = None
        self._maintainer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- life cycle ----------------------------------------------------------------------------------------------

    async def start(self, on_capacity: Callable[[], None]) -> None:
        """Connect to Ray (or start a local instance) and start the workers (they join as they become ready)."""
        self._on_capacity = on_capacity
        if not ray.is_initialized():
            ray.init(address=self.config.ray_address, namespace="nodegraph", log_to_driver=False,
                     **({"include_dashboard": False} if self.config.ray_address is None else {}))
            self._owns_ray = True
        self._server_node = ray.get_runtime_context().get_node_id()
        self._gpu = ray.cluster_resources().get("GPU", 0) > 0
        self._remote = ray.remote(PromptActor)
        await self._maintain()
        self._maintainer = asyncio.create_task(self._maintain_forever(), name="nodegraph-ray-pool")

    async def close(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for worker in list(self.workers.values()):
            self._kill(worker)
        if self._owns_ray:
            ray.shutdown()

    def target_size(self) -> int:
        """How many workers the pool wants now: the configured size, else one per GPU (per node without GPUs)."""
        if self.size is not None:
            return self.size
        gpus = int(ray.cluster_resources().get("GPU", 0))
        return gpus if gpus else sum(1 for node in ray.nodes() if node.get("Alive"))

    def resize(self, size: int | None) -> None:
        """A new pool size (None: follow the cluster); applied at once, busy workers leave after their prompt."""
        self.size = size
        self._spawn_task(self._maintain())

    async def _maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(MAINTAIN_EVERY)
            try:
                await self._maintain()
            except Exception:
                log.exception("ray pool: maintenance failed")

    async def _maintain(self) -> None:
        """Drop idle workers that died, then start or retire workers to reach the target size."""
        idle = [w for w in self.workers.values() if w.state == "idle"]
        pings = await asyncio.gather(
            *(asyncio.wait_for(asyncio.wrap_future(w.actor.ping.remote().future()), PING_TIMEOUT) for w in idle),
            return_exceptions=True,
        )
        for worker, outcome in zip(idle, pings):
            if isinstance(outcome, RayActorError) and worker.state == "idle":
                self._lost(worker)
        staying = [w for w in self.workers.values() if not w.leaving]
        target = self.target_size()
        for _ in range(target - len(staying)):
            self._start_worker()
        order = {"starting": 0, "idle": 1, "busy": 2}
        for worker in sorted(staying, key=lambda w: order[w.state])[: max(0, len(staying) - target)]:
            self._retire(worker)

    def _start_worker(self) -> RayWorker:
        resources: dict[str, Any] = {"num_cpus": self.config.worker_cpus}
        if self._gpu:
            resources["num_gpus"] = 1
        options = {
            "server_node": self._server_node,
            "output_dir": str(self.config.worker_output_dir) if self.config.worker_output_dir else None,
            "preview_size": self.config.preview_size,
            "cache": self.config.cache,
            "cache_entries": self.config.cache_entries,
            "max_ui_bytes": int(self.config.max_output_size_mb * 1024 * 1024),
            "concurrency": self.concurrency,
            "max_batch": self.config.max_batch,
        }
        actor = self._remote.options(
            max_restarts=0, max_task_retries=0, runtime_env={"env_vars": {"PYTHONPATH": code_paths()}}, **resources
        ).remote(self.folders, options)
        worker = RayWorker(f"w{next(self._numbers)}", actor, slots=self.concurrency)
        self.workers[worker.id] = worker
        self._spawn_task(self._join(worker))
        return worker

    async def _join(self, worker: RayWorker) -> None:
        """Wait for a new actor to be placed and answer; then it takes prompts."""
        try:
            info = await worker.actor.info.remote()
        except RayActorError as exc:
            log.warning("ray pool: worker %s failed to start: %s", worker.id, exc)
            self._lost(worker)
            return
        if worker.id not in self.workers:
            return  # retired while starting
        worker.load = {k: info.pop(k) for k in LOAD_KEYS if k in info}
        worker.info = info
        worker.state = "idle"
        log.info("ray pool: worker %s ready on %s (%s, pid %s)", worker.id, info["host"], info["device"], info["pid"])
        self._capacity_changed()

    def _retire(self, worker: RayWorker) -> None:
        if worker.state == "busy":
            worker.leaving = True
        else:
            self._kill(worker)

    def _kill(self, worker: RayWorker) -> None:
        self.workers.pop(worker.id, None)
        try:
            ray.kill(worker.actor)
        except Exception:  # already gone
            pass

    def _lost(self, worker: RayWorker) -> None:
        """A dead actor: forget it; maintenance starts a replacement."""
        if self.workers.pop(worker.id, None) is not None:
            self.deaths += 1
            log.warning("ray pool: worker %s died", worker.id)
            self._spawn_task(self._maintain())

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _capacity_changed(self) -> None:
        self._freed.set()
        self._on_capacity()

    # --- slots ---------------------------------------------------------------------------------------------------

    def _pick(self, prompt: dict[str, Any]) -> RayWorker | None:
        """Take a slot on the best worker with one free (`scheduling.choose_worker`)."""
        available = [w.view() for w in self.workers.values() if w.free_slots > 0]
        choice = choose_worker(prompt_models(prompt), available)
        if choice is None:
            return None
        worker = self.workers[choice.id]
        worker.taken += 1
        worker.state = "busy"
        return worker

    def reserve(self, prompt: dict[str, Any]) -> RayWorker | None:
        if self._retry_waiters:
            return None  # a prompt that lost its worker goes first
        return self._pick(prompt)

    def release(self, slot: RayWorker) -> None:
        """Give back one of the worker's slots (the pool's own runs remove their prompt from it first)."""
        slot.taken = max(0, slot.taken - 1)
        if slot.id not in self.workers:
            return
        if slot.taken == 0:
            if slot.leaving:
                self._kill(slot)
                return
            slot.state = "idle"
        self._capacity_changed()

    async def _reserve_for_retry(self, job: Job) -> RayWorker | None:
        """The next idle worker, ahead of the queue; None if the prompt was interrupted while it waited."""
        self._retry_waiters += 1
        self._waiting.add(job.prompt_id)
        try:
            while job.prompt_id not in self._cancelled:
                worker = self._pick(job.workflow.prompt)
                if worker is not None:
                    return worker
                self._freed.clear()
                await self._freed.wait()
            return None
        finally:
            self._retry_waiters -= 1
            self._waiting.discard(job.prompt_id)
            self._cancelled.discard(job.prompt_id)

    # --- running -------------------------------------------------------------------------------------------------

    def done(self, slot: RayWorker) -> None:
        """Nothing to do: `run` gives each worker's slot back itself, since a prompt that loses its worker moves on to
        another one (and prompts on a pool run side by side anyway)."""

    async def run(self, job: Job, on_event: EventCallback, slot: RayWorker) -> RunResult:
        worker: RayWorker | None = slot
        attempts: list[str] = []
        while worker is not None:
            attempts.append(worker.id)
            try:
                return await self._run_on(worker, job, on_event)
            except WorkerDied as exc:
                reason = str(exc)
            finally:
                if job.prompt_id in worker.prompts:
                    worker.prompts.remove(job.prompt_id)
                self.release(worker)
            self._remember_retry(job.prompt_id, attempts)
            if len(attempts) >= MAX_ATTEMPTS:
                return self._died(job, attempts, reason, on_event)
            self.retries += 1
            log.warning("prompt %s: %s; retrying on another worker", job.prompt_id, reason)
            worker = await self._reserve_for_retry(job)
        interrupted = execution_interrupted()
        on_event("execution_interrupted", dict(interrupted))
        return RunResult(job.prompt_id, "interrupted", error=interrupted)

    async def _run_on(self, worker: RayWorker, job: Job, on_event: EventCallback) -> RunResult:
        """One attempt: start the prompt on the actor, forward its events as they come, collect the result."""
        pid = job.prompt_id
        worker.prompts.append(pid)
        worker.recent.append(pid)
        loop = asyncio.get_running_loop()
        renames: dict[FileKey, str] = {}
        finished = asyncio.wrap_future(worker.actor.run.remote(pid, job.workflow, job.extra_data).future())
        try:
            done = False
            while not done:
                events, done = await worker.actor.poll.remote(pid, POLL_WAIT)
                for event, data in events:
                    files = data.pop("files", None)
                    if files:
                        renames.update(await loop.run_in_executor(None, store_files, files, self.folders))
                        rename_entries(data["output"], renames)
                    on_event(event, data)
                if not done and finished.done() and finished.exception() is not None:
                    break  # the call failed before the prompt started (e.g. a node class the worker cannot import)
            reply = await finished
        except RayActorError as exc:
            self._lost(worker)
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WorkerDied(f"worker {worker.id} died: {first_line}") from None
        finally:
            if finished.done() and not finished.cancelled():
                finished.exception()  # retrieved: a death is reported once, by the poll
        worker.load = reply["load"]
        for ui in reply["outputs"].values():
            rename_entries(ui, renames)
        return RunResult(pid, reply["status"], outputs=reply["outputs"], timings=reply["timings"],
                         executed=reply["executed"], cached=reply["cached"], error=reply["error"])

    def _remember_retry(self, prompt_id: str, attempts: list[str]) -> None:
        self.retried[prompt_id] = attempts  # the same list: the retry's worker is added when it starts
        while len(self.retried) > KEEP_RECENT:
            self.retried.popitem(last=False)

    @staticmethod
    def _died(job: Job, attempts: list[str], reason: str, on_event: EventCallback) -> RunResult:
        error = execution_error(
            f"the workers running this prompt died ({', '.join(attempts)}; tried {len(attempts)} times): {reason}",
            "WorkerDied", timestamp=now_ms(),
        )
        on_event("execution_error", error)
        return RunResult(job.prompt_id, "error", error=error)

    def interrupt(self, prompt_id: str | None) -> bool:
        found = False
        for worker in self.workers.values():
            for running in worker.prompts:  # only this prompt: the worker's other prompts go on
                if prompt_id in (None, running):
                    worker.actor.interrupt.remote(running)
                    found = True
        for waiting in list(self._waiting):
            if prompt_id in (None, waiting):
                self._cancelled.add(waiting)
                self._freed.set()
                found = True
        return found

    async def free(self, unload_models: bool, free_memory: bool) -> None:
        ready = [w for w in self.workers.values() if w.state != "starting"]
        await asyncio.gather(*(w.actor.free.remote(unload_models, free_memory) for w in ready),
                             return_exceptions=True)

    # --- reporting -----------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "concurrency": self.concurrency,
            "workers": [w.describe() for w in self.workers.values()],
            "retries": self.retries,
            "deaths": self.deaths,
            "retried": dict(self.retried),
        }
