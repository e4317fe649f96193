"""One VAE decode for several prompts: the decodes that prompts running side by side (`serve --concurrency`) ask of
one VAE while it is busy run together as its next batch.

Prompts whose UNet calls share forwards (batching.py) finish sampling at the same step, so their decodes arrive
together; on a CPU each decode already uses every core, and one after another they cost the sum of their fixed
costs (the module walk, the small kernels). A decode that finds the VAE idle runs at once, alone: there is no
window to wait for others, so a lone prompt pays nothing. The decodes that arrive while one runs (or waits for the
device's turn, ModelCache.compute) queue up, and the next one to run takes every queued decode of the same latent
shape, dtype and device, up to a row limit, and runs them as one batch.

The VAE sees each latent as it would alone (its rows are its own; group norms and attention in the VAE work per
image), so a prompt's image is the one it gets alone, up to float rounding of the batched kernels. If a batch
fails (out of memory), each caller decodes its own latent again alone, so an error reaches only the prompt whose
latent caused it.
"""
from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(eq=False)  # compared by identity (it holds tensors)
class _Decode:
    latent: torch.Tensor
    wake: threading.Condition
    taken: bool = False
    done: bool = False
    alone: bool = False  # the shared batch failed: the caller decodes its own latent again
    result: torch.Tensor | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple:
        return tuple(self.latent.shape[1:]), self.latent.dtype, self.latent.device

    @property
    def rows(self) -> int:
        return self.latent.shape[0]


class DecodeBatcher:
    """Gathers the decodes asked of one VAE (see the module's docstring). `decode(z)` returns the VAE's raw output
    (`vae.decode(z).sample`, float32) for a latent already on the VAE's device and dtype."""

    def __init__(self, vae: torch.nn.Module, max_rows: Callable[[torch.Tensor], int],
                 compute: Callable[[], AbstractContextManager[Any]] = nullcontext):
        self.vae = vae
        self._max_rows = max_rows  # rows one batch may hold, for a latent like this one (memory, --max-batch)
        self._compute = compute
        self._lock = threading.Lock()
        self._queue: list[_Decode] = []
        self._running = False
        self.counters = {"batches": 0, "shared_batches": 0, "rows": 0}

    @property
    def queued(self) -> int:
        """Decodes waiting for a batch (not counting one that runs)."""
        with self._lock:
            return len(self._queue)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        call = _Decode(latent, threading.Condition(self._lock))
        group: list[_Decode] | None = None
        with self._lock:
            self._queue.append(call)
            while not call.done:
                if not call.taken and not self._running:
                    group = self._take_group(call)
                    self._running = True
                    break
                call.wake.wait()
        if group is not None:
            self._run(group)
        if call.error is not None:
            raise call.error
        if call.alone:
            return self._batch([call])[0]
        assert call.result is not None
        return call.result

    def _take_group(self, call: _Decode) -> list[_Decode]:
        """`call` and the queued decodes that can join it, in queue order, under the row limit (the lock is held)."""
        limit = max(call.rows, self._max_rows(call.latent))
        group, rows = [call], call.rows
        for other in self._queue:
            if other is not call and other.key == call.key and rows + other.rows <= limit:
                group.append(other)
                rows += other.rows
        for c in group:
            c.taken = True
            self._queue.remove(c)
        return group

    def _run(self, group: list[_Decode]) -> None:
        outputs: list[torch.Tensor] | None = None
        error: BaseException | None = None
        try:
            outputs = self._batch(group)
        except BaseException as exc:  # the others must not wait forever for this batch
            error = exc
        with self._lock:
            self._running = False
            for i, c in enumerate(group):
                if outputs is not None:
                    c.result = outputs[i]
                elif len(group) == 1:
                    c.error = error
                else:
                    c.alone = True
                c.done = True
                c.wake.notify()
            for c in self._queue:  # one of the decodes that came meanwhile runs the next batch
                c.wake.notify()

    def _batch(self, group: list[_Decode]) -> list[torch.Tensor]:
        rows = [c.rows for c in group]
        latent = torch.cat([c.latent for c in group]) if len(group) > 1 else group[0].latent
        # no_grad, as a decode alone (not inference mode: the images go on to nodes that may change them in place)
        with torch.no_grad(), self._compute():
            images = self.vae.decode(latent).sample.float()
        with self._lock:
            self.counters["batches"] += 1
            self.counters["shared_batches"] += len(group) > 1
            self.counters["rows"] += sum(rows)
        return list(images.split(rows))
