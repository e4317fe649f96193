"""Owners of memory outside the output cache (the model cache of the SD packs) report and free through here.

The server's `/free` and `/system_stats` and the CLI talk to these owners without importing torch: a pack that
keeps models loaded registers an owner when it is first used.
"""
from __future__ import annotations

from typing import Any, Protocol


class ResourceOwner(Protocol):
    name: str

    def stats(self) -> dict[str, Any]:
        """What is held: a JSON-able dict (entries, bytes, devices, counters)."""

    def free(self, unload_models: bool = False, free_memory: bool = False) -> None:
        """Give memory back: drop loaded models (`unload_models`) and / or cached working memory (`free_memory`)."""


_owners: dict[str, ResourceOwner] = {}


def register_owner(owner: ResourceOwner) -> None:
    _owners[owner.name] = owner


def owners() -> list[ResourceOwner]:
    return list(_owners.values())
