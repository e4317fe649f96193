"""Wall time of one call, waiting for queued GPU work before and after (shared by the torch benchmarks)."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synced_time(fn: Callable[[], object]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start
