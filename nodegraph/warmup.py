"""Importing the heavy libraries node packs use (torch, diffusers, transformers) ahead of the first prompt.

Those imports take 5-10 s on an idle 2-core machine and a minute on a busy one. The node packs import them lazily
(so `nodegraph --help`, validation and the server's start stay fast), which charged the whole import to the first
node that needed it: the first prompt's Load Checkpoint "took" 60 s. `nodegraph serve` starts a `Warmup` right after
it listens, so the import runs while the user opens the editor; a prompt that arrives before it is done waits for
it, and the wait is reported as `imports` in the prompt's timings instead of inside a node's time. `nodegraph run`
imports what the workflow's packs need before the first node and reports that time the same way.

A pack lists the modules to import ahead in a module-level `WARM_IMPORTS` tuple (NodeRegistry.warm_imports()).
`NODEGRAPH_WARMUP=0` in the environment turns the background import off (benchmarks use it as the baseline).
This module imports nothing heavy itself.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def enabled() -> bool:
    return os.environ.get("NODEGRAPH_WARMUP", "1").strip().lower() not in ("0", "false", "no", "off")


def import_modules(modules: Sequence[str]) -> float:
    """Import `modules` now; returns the seconds it took. A module that fails to import is logged and skipped: the
    node that needs it reports the error when it runs."""
    started = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported again, precisely, by the node that needs it
            log.warning("could not import %s ahead of time: %s", name, exc)
    return time.perf_counter() - started


class Warmup:
    """One background import of `modules`. States: idle (not started), importing, done."""

    def __init__(self, modules: Sequence[str]):
        self.modules = tuple(modules)
        self.seconds: float | None = None  # how long the import took, once done
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        if self._done.is_set():
            return "done"
        return "importing" if self._thread is not None else "idle"

    def start(self) -> None:
        """Start importing on a daemon thread (a server stopped meanwhile does not wait for it)."""
        if self._thread is not None or not self.modules:
            self._done.set()
            return
        self._thread = threading.Thread(target=self._run, name="nodegraph-warmup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.seconds = import_modules(self.modules)
            log.info("imported the node packs' libraries in %.1fs, in the background", self.seconds)
        finally:
            self._done.set()

    def wait(self) -> float:
        """Block until the import is done (at once when it is, or was never started); returns the seconds waited."""
        if self._thread is None or self._done.is_set():
            return 0.0
        started = time.perf_counter()
        self._done.wait()
        return time.perf_counter() - started

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "seconds": self.seconds, "modules": list(self.modules)}
