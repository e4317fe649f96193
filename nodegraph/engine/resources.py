"""Owners of memory outside the output cache (the model cache of the SD packs) report and free through this protocol.

The server's `/free` and `/system_stats` and a Ray worker's load report talk to these owners without importing
torch: they are the resources a pack made for a runtime (`Runtime.owners()`, engine/runtime.py).
"""
from __future__ import annotations

from typing import Any, Protocol


class ResourceOwner(Protocol):
    name: str

    def stats(self) -> dict[str, Any]:
        """What is held: a JSON-able dict (entries, bytes, devices, counters)."""

    def free(self, unload_models: bool = False, free_memory: bool = False) -> None:
        """Give memory back: drop loaded models (`unload_models`) and / or cached working memory (`free_memory`)."""
