"""Where the server's prompts run: the executor backends behind the prompt worker.

- `LocalBackend` (the default): ONE engine `Executor` in the server process; prompts run one at a time.
- The Ray backend (`--executor ray`, `nodegraph.distributed.pool.RayPool`): a pool of Ray actors, each owning one
  device (a GPU or a CPU slot) with its own Executors and model cache; `--concurrency` prompts per actor (default
  one), several actors at once.

Both answer the same small protocol, `PromptBackend`. A backend hands out *slots* (`reserve`): the local one has
`--concurrency` of them, the Ray pool `--concurrency` per actor, chosen by model affinity. Nothing of Ray is imported
unless the configuration asks for it (`make_backend`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..engine import Executor, NullCache, OutputCache, RunResult, Runtime
from ..engine.executor import EventCallback
from ..engine.limits import Limits
from ..jobs import Job

if TYPE_CHECKING:
    from .config import ServerConfig

EXECUTORS = ("local", "ray")


class PromptBackend(Protocol):
    """What the prompt worker needs from wherever prompts run."""

    name: str
    free_while_running: bool  # whether /free may go to the backend while prompts run (else: once idle)

    async def start(self, on_capacity: Callable[[], None]) -> None:
        """Get ready; `on_capacity()` is called whenever a slot may have become free (a prompt ended, a worker
        joined), so the prompt worker looks at the queue again."""

    def reserve(self, prompt: dict[str, Any]) -> Any | None:
        """A free slot for this prompt (API format; the best one for the models it reads), or None when all are
        busy."""

    def release(self, slot: Any) -> None:
        """Give back a reserved slot that will not run (its prompt failed validation)."""

    async def run(self, job: Job, on_event: EventCallback, slot: Any) -> RunResult:
        """Run the job (its validated `workflow`, its run's `extra_data`) on its reserved slot; events in the
        engine's names. The slot is free again once this returns, or, where the backend waits for it, once `done`
        is called."""

    def done(self, slot: Any) -> None:
        """The worker has recorded the prompt that ran on `slot` and sent its end."""

    def interrupt(self, prompt_id: str | None) -> bool:
        """Interrupt a running prompt (None: every running prompt); False if it is not running here."""

    async def free(self, unload_models: bool, free_memory: bool) -> None:
        """Drop the output cache (`free_memory`) and let model owners give memory back."""

    def stats(self) -> dict[str, Any]:
        """JSON-able state for /system_stats and GET /workers (cheap: no waiting on workers)."""

    def resize(self, size: int | None) -> None:
        """Keep `size` workers (None: as many as the cluster has devices); ValueError where that is impossible."""

    async def close(self) -> None: ...


class LocalBackend:
    """Engine Executors in this process, one slot each: one by default (prompts take turns, as in ComfyUI), or
    `--concurrency N` of them sharing the output cache and the model cache, so N prompts run side by side (their
    UNet calls batched together by the model cache: nodegraph_nodes/diffusion/batching.py). Each slot runs its node work
    on its own thread."""

    name = "local"
    free_while_running = False  # the models in use belong to the running prompt: free after it, as ComfyUI does

    def __init__(self, executor: Executor, concurrency: int = 1):
        # Extra slots share the first executor's output cache, runtime (folders, the model cache) and limits.
        self.executors = [executor] + [
            Executor(executor.runtime, cache=executor.cache, previews=executor.previews, limits=executor.limits)
            for _ in range(max(1, concurrency) - 1)
        ]
        self._idle = list(self.executors)
        self._running: dict[str, Executor] = {}

    @property
    def executor(self) -> Executor:
        """The first slot's executor (the only one without --concurrency)."""
        return self.executors[0]

    async def start(self, on_capacity: Callable[[], None]) -> None:
        return None

    def reserve(self, prompt: dict[str, Any]) -> Any | None:
        # The slot freed last: its node thread (and torch's threads under it) ran a moment ago, so a lone client's
        # prompts keep to one warm thread instead of taking turns across all of them.
        return self._idle.pop() if self._idle else None

    def release(self, slot: Any) -> None:
        if slot not in self._idle:
            self._idle.append(slot)

    async def run(self, job: Job, on_event: EventCallback, slot: Any = None) -> RunResult:
        executor = slot if isinstance(slot, Executor) else self.executor
        self._running[job.prompt_id] = executor
        try:
            return await executor.run(job.workflow, job.prompt_id, extra_data=job.extra_data, on_event=on_event)
        finally:
            self._running.pop(job.prompt_id, None)

    def done(self, slot: Any) -> None:
        # The slot is free only once its prompt is recorded and its end sent (`done`, not the end of `run`): one at
        # a time, the next prompt must not start, and send its events, before the last one's end, as in ComfyUI.
        self.release(slot)

    def interrupt(self, prompt_id: str | None) -> bool:
        if prompt_id is None:
            for executor in self.executors:
                executor.interrupt()
            return True
        executor = self._running.get(prompt_id)
        if executor is None:
            return False
        executor.interrupt()
        return True

    async def free(self, unload_models: bool, free_memory: bool) -> None:
        await self.executor.free(unload_models, free_memory)

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "concurrency": len(self.executors), "running": len(self._running)}

    def resize(self, size: int | None) -> None:
        raise ValueError("the local executor's slots are fixed at start (--concurrency); "
                         "run the server with --executor ray for a resizable pool of workers")

    async def close(self) -> None:
        for executor in self.executors:
            executor.close()


def make_output_cache(config: ServerConfig) -> OutputCache:
    return NullCache() if config.cache == "none" else OutputCache(max_entries=config.cache_entries)


def make_backend(config: ServerConfig) -> PromptBackend:
    """The backend the configuration names; the Ray one is imported only here, only when asked for."""
    if config.executor == "local":
        limits = Limits(max_ui_bytes=int(config.max_output_size_mb * 1024 * 1024))
        executor = Executor(Runtime(config.folders), cache=make_output_cache(config), limits=limits)
        return LocalBackend(executor, concurrency=config.concurrency)
    if config.executor == "ray":
        from ..distributed.pool import RayPool

        return RayPool(config)
    raise ValueError(f"unknown executor {config.executor!r}; expected one of {', '.join(EXECUTORS)}")
