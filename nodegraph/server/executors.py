"""Where the server's prompts run: the executor backends behind the prompt worker.

- `LocalBackend` (the default): ONE engine `Executor` in the server process; prompts run one at a time.
- The Ray backend (`--executor ray`, `nodegraph.distributed.pool.RayPool`): a pool of Ray actors, each owning one
  device (a GPU or a CPU slot) with its own Executor and model cache; one prompt per actor, several at once.

Both answer the same small protocol, `PromptBackend`. A backend hands out *slots* (`reserve`): the local one has a
single slot, the Ray pool one per idle actor, chosen by model affinity. Nothing of Ray is imported unless the
configuration asks for it (`make_backend`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..engine import Executor, NullCache, OutputCache, RunResult, Workflow
from ..engine.executor import EventCallback
from ..engine.limits import Limits

if TYPE_CHECKING:
    from .config import ServerConfig

EXECUTORS = ("local", "ray")


@dataclass
class Job:
    """One validated prompt handed to a backend."""

    prompt_id: str
    workflow: Workflow
    extra_data: dict[str, Any] = field(default_factory=dict)


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
        """Run the job on its reserved slot (released when this returns); events in the engine's names."""

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
    """The engine's Executor in this process: one slot, node work on the executor's own thread."""

    name = "local"
    free_while_running = False  # the models in use belong to the running prompt: free after it, as ComfyUI does

    def __init__(self, executor: Executor):
        self.executor = executor
        self._busy = False

    async def start(self, on_capacity: Callable[[], None]) -> None:
        return None

    def reserve(self, prompt: dict[str, Any]) -> Any | None:
        if self._busy:
            return None
        self._busy = True
        return self

    def release(self, slot: Any) -> None:
        self._busy = False

    async def run(self, job: Job, on_event: EventCallback, slot: Any = None) -> RunResult:
        try:
            return await self.executor.run(job.workflow, job.prompt_id, extra_data=job.extra_data, on_event=on_event)
        finally:
            self._busy = False

    def interrupt(self, prompt_id: str | None) -> bool:
        self.executor.interrupt()  # the prompt worker checked that prompt_id is the running one
        return True

    async def free(self, unload_models: bool, free_memory: bool) -> None:
        await self.executor.free(unload_models, free_memory)

    def stats(self) -> dict[str, Any]:
        return {"name": self.name}

    def resize(self, size: int | None) -> None:
        raise ValueError("the local executor runs one prompt at a time in this process; "
                         "run the server with --executor ray for a pool of workers")

    async def close(self) -> None:
        self.executor.close()


def make_output_cache(config: ServerConfig) -> OutputCache:
    return NullCache() if config.cache == "none" else OutputCache(max_entries=config.cache_entries)


def make_backend(config: ServerConfig) -> PromptBackend:
    """The backend the configuration names; the Ray one is imported only here, only when asked for."""
    if config.executor == "local":
        limits = Limits(max_ui_bytes=int(config.max_output_size_mb * 1024 * 1024))
        return LocalBackend(Executor(config.folders, cache=make_output_cache(config), limits=limits))
    if config.executor == "ray":
        from ..distributed.pool import RayPool

        return RayPool(config)
    raise ValueError(f"unknown executor {config.executor!r}; expected one of {', '.join(EXECUTORS)}")
