"""The output cache: node results kept across runs, keyed by what they were computed from.

Policy (documented in the README):
- A node's key is a hash of its class, its `fingerprint` (ComfyUI's IS_CHANGED, for nodes that read the outside
  world), its literal inputs, and for each link the key of the source node and the output index. Node ids are not
  part of the key (renumbered graphs still hit), except for nodes that declare `not_idempotent`.
- So re-running an identical workflow runs nothing, and changing one literal re-runs that node and what is
  downstream of it only.
- Entries are evicted least-recently-used first when there are more than `max_entries` or their estimated size
  exceeds `max_bytes`. Sizes are estimated from tensors / arrays / bytes (see `estimate_nbytes`); values that own
  no memory of their own (model handles, whose weights the model cache owns) count as small.
- A failed or interrupted node stores nothing; what finished before it stays valid.
- Prompts that run side by side (`serve --concurrency`) share work in progress: a node whose key another prompt is
  computing at that moment waits for that result instead of computing it again (what it would have found in the
  cache had the other prompt finished first). If the other prompt's node fails or is interrupted, it runs its own.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sys
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None
    nbytes: int


def estimate_nbytes(value: Any, _depth: int = 0) -> int:
    """A cheap estimate of the memory a value holds, without importing torch or numpy."""
    if _depth > 4:
        return 0
    sizer = getattr(value, "cache_nbytes", None)
    if callable(sizer):
        return int(sizer())
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # torch.Tensor
        return int(value.element_size() * value.nelement())
    nbytes = getattr(value, "nbytes", None)  # numpy arrays
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, dict):
        return sum(estimate_nbytes(v, _depth + 1) for v in value.values()) + 64
    if isinstance(value, (list, tuple)):
        return sum(estimate_nbytes(v, _depth + 1) for v in value) + 64
    return sys.getsizeof(value)


def _canonical(value: Any) -> Any:
    """A JSON-able, order-independent form of a literal input for hashing."""
    if isinstance(value, float) and math.isnan(value):
        return {"__nan__": uuid.uuid4().hex}  # NaN never equals itself: "always changed"
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def node_key(
    class_type: str,
    fingerprint: Any,
    constants: dict[str, Any],
    links: dict[str, tuple[str, int]],
    node_id: str | None = None,
) -> str:
    """The cache key of one node; `links` maps input names to (source key, output index)."""
    payload = {
        "class": class_type,
        "fingerprint": _canonical(fingerprint),
        "constants": _canonical(constants),
        "links": {name: [key, slot] for name, (key, slot) in sorted(links.items())},
        "id": node_id,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode()).hexdigest()


class OutputCache:
    """A thread-safe LRU of node results, bounded by entry count and estimated bytes."""

    def __init__(self, max_entries: int = 512, max_bytes: int = 4 << 30):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._computing: dict[str, asyncio.Future[None]] = {}  # key -> done when its computation ends
        self.hits = self.misses = self.evictions = 0
        self.shared = 0  # results taken from another prompt's computation in progress

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: str, outputs: tuple[Any, ...], ui: dict[str, Any] | None) -> None:
        entry = CacheEntry(outputs, ui, estimate_nbytes(outputs))
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = entry
            self._bytes += entry.nbytes
            # Never evict the entry just stored, even if alone it exceeds the byte budget: the run needs it.
            while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    # --- work in progress (on the event loop that runs the executors) --------------------------------------------

    def computing(self, key: str) -> asyncio.Future[None] | None:
        """The computation of `key` running now for another prompt, if any: done when it ends (stored or not)."""
        return self._computing.get(key)

    def start(self, key: str) -> asyncio.Future[None] | None:
        """Mark `key` as being computed; pass the result to `finish` when the computation ends, however it ends."""
        future = self._computing[key] = asyncio.get_running_loop().create_future()
        return future

    def finish(self, key: str, future: asyncio.Future[None] | None) -> None:
        if future is None:
            return
        if self._computing.get(key) is future:
            del self._computing[key]
        if not future.done():
            future.set_result(None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "bytes": self._bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "shared": self.shared,
        }


class NullCache(OutputCache):
    """Caches nothing: every run recomputes every node (`--cache none`)."""

    def __init__(self) -> None:
        super().__init__(max_entries=0, max_bytes=0)

    def put(self, key: str, outputs: tuple[Any, ...], ui: dict[str, Any] | None) -> None:
        return None

    def start(self, key: str) -> None:
        return None  # nothing is stored, so nobody could take the result: no prompt waits for another
