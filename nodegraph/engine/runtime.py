"""The runtime a node runs in: the folders and settings of one server or CLI run, and what node packs keep for it.

Whoever makes an Executor makes its Runtime (the server, `nodegraph run`, a Ray worker, a test) from the folders
and settings it was given (`--device`, `--precision`, the budgets and `--max-batch` sit in `Folders.settings`).
Executors that should share loaded models share one Runtime: the slots of `serve --concurrency`, the slots of one
Ray worker. A running node reaches it as `self.context.runtime`.

The engine knows nothing of torch: what a pack keeps (the SD packs' model cache) is made by the pack, on first use,
through `resource(name, make)`, once per runtime even when prompts running side by side ask at the same moment. A
resource with `stats()` and `free()` is a memory owner (`owners()`), reported by /system_stats and emptied by /free.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from .folders import Folders
from .resources import ResourceOwner

T = TypeVar("T")


@dataclass(eq=False)
class Runtime:
    folders: Folders | None = None
    _resources: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # prompts running now on executors that share this runtime (several with `serve --concurrency`)
    prompts_running: int = field(default=0, init=False, repr=False)

    @classmethod
    def of(cls, env: Runtime | Folders | None) -> Runtime:
        """`env` itself when it is a Runtime, else a new Runtime over these folders (an executor made from folders
        alone: the engine's tests, benchmarks)."""
        return env if isinstance(env, Runtime) else cls(env)

    # --- settings (Folders.settings, typed) ----------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """Options that are not folders, as the CLI / server / Ray worker set them; {} without folders."""
        settings = getattr(self.folders, "settings", None)
        return settings if isinstance(settings, dict) else {}

    @property
    def device(self) -> str:
        """The compute device asked for: "auto" (CUDA, then MPS, then the CPU), "cpu", "cuda", "cuda:1"..."""
        return str(self.settings.get("device") or "auto")

    @property
    def precision(self) -> str:
        """"auto", "fp32", "fp16" or "bf16"."""
        return str(self.settings.get("precision") or "auto")

    @property
    def vram_budget(self) -> int | None:
        value = self.settings.get("vram_budget")
        return None if value is None else int(value)

    @property
    def ram_budget(self) -> int | None:
        value = self.settings.get("ram_budget")
        return None if value is None else int(value)

    @property
    def max_batch(self) -> int:
        """Rows one shared UNet forward may hold when prompts sample side by side; 1: no batching."""
        return max(1, int(self.settings.get("max_batch") or 1))

    # --- what runs -----------------------------------------------------------------------------------------------

    @contextmanager
    def running_prompt(self) -> Iterator[None]:
        """Count a prompt as running while inside (Executor.run); packs read `prompts_running` (the UNet batcher
        lets a prompt that starts sampling wait a moment for the others that run beside it)."""
        with self._lock:
            self.prompts_running += 1
        try:
            yield
        finally:
            with self._lock:
                self.prompts_running -= 1

    # --- what packs keep -----------------------------------------------------------------------------------------

    def resource(self, name: str, make: Callable[[Runtime], T]) -> T:
        """The resource `name` of this runtime, made by `make(self)` the first time it is asked for."""
        with self._lock:
            if name not in self._resources:
                self._resources[name] = make(self)  # published only once made (a cache with its readers)
            return self._resources[name]

    def owners(self) -> list[ResourceOwner]:
        """The resources that hold memory (they report `stats()` and give memory back with `free()`)."""
        with self._lock:
            values = list(self._resources.values())
        return [v for v in values if callable(getattr(v, "stats", None)) and callable(getattr(v, "free", None))]
