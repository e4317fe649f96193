"""One UNet forward for several prompts: the UNet calls of prompts that sample at the same time are gathered and run
as one batch, the way LLM servers batch requests continuously.

At small and medium sizes a UNet call costs about the same for 2 rows as for 16 (on a CPU the weights are read from
memory once per call; on a GPU the kernels are far from full), so prompts that run side by side (`nodegraph serve
--concurrency N`) share their calls instead of taking turns.

How it works. Each prompt that samples holds a *participant* view of the UNet (`UNetBatcher.participant()`, handed
out by the model cache instead of the bare module). A participant's call is queued. One forward runs at a time per
UNet: the calls that arrive while it runs wait for the next one, so prompts that started apart fall into step (each
waits for the others' calls instead of running a small forward of its own beside them, which would only split the
device between two forwards and keep the groups apart). When no forward runs, the queued calls run when every
participant has a call queued (nobody else is about to call), when they fill a forward (`max_batch` rows), or when
`window` seconds have passed since they were queued and since the last forward ended (the callers of that forward
need a moment to take their outputs, step their samplers and call again), whichever comes first. The thread that
finds the group ready executes it for everyone and hands each caller its rows back; the callers take them one
after another (each when the one before it has called again), so that their sampler steps do not contend for the GIL
(see `_pass_turn`).

What can share a forward: calls on the same UNet with the same latent shape (C, h, w), dtype and extra conditioning
keys. Everything per sample stays per sample: the timestep (diffusers takes one per row), the text context (contexts
of different token counts are repeated whole to their least common multiple, as the denoiser already does for
cond / uncond: attention over a repeated context equals attention over the original), SDXL's pooled embeds and size
ids, and ControlNet residuals (a call without ControlNet gets zero residuals, which leave its rows exactly as they
would be without: the UNet adds them). CFG stays batched inside each call. A sampler only sees its denoiser, so this
works for every sampler and for prompts at different steps of their schedules.

Failure isolation: if a shared forward raises (out of memory, a bad input of one prompt), each caller runs its own
call again alone, so one prompt's error reaches only that prompt.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

DEFAULT_WINDOW = 0.02  # seconds a call waits for the other participants' calls before running without them
HANDOFF_TIMEOUT = 0.005  # seconds a caller whose output is ready waits for its turn to take it (see _pass_turn)
FIRST_CALL_WINDOW = 0.15  # seconds a prompt that starts sampling may wait for the prompts beside it (_others_may_join)
TAKEN_RECHECK = 0.1  # seconds between looks of a caller whose call is in a running forward (a turn wakes it first)
ROW_LIMIT_TTL = 0.5  # seconds a memory-based row limit is reused (reading free memory costs more than a wake-up)

_local = threading.local()


def in_shared_call() -> bool:
    """True on a thread that is running a forward shared by several prompts: per-prompt hooks on the UNet (an
    interrupt check, say) must not act there, since the call belongs to every prompt in it."""
    return getattr(_local, "shared", False)


@dataclass(eq=False)  # compared by identity (it holds tensors)
class _Call:
    participant: int
    sample: torch.Tensor
    timestep: torch.Tensor
    context: torch.Tensor
    added: dict[str, torch.Tensor] | None
    down: list[torch.Tensor] | tuple[torch.Tensor, ...] | None
    mid: torch.Tensor | None
    queued_at: float = field(default_factory=time.monotonic)
    taken: bool = False  # in a forward being run by some caller
    done: bool = False
    released: bool = False  # its caller may take the output now (its turn came, see UNetBatcher._pass_turn)
    alone: bool = False  # the shared forward failed: the caller runs its own call again
    result: torch.Tensor | None = None
    error: BaseException | None = None
    wake: threading.Condition | None = None  # on the batcher's lock: wakes this caller alone
    key: tuple = ()  # calls with equal keys can share a forward
    first: bool = False  # its participant's first call (the prompt starts sampling)
    hold_until: float = 0.0  # time.monotonic() until which a first call waits for others (_others_may_join)

    def __post_init__(self) -> None:
        added = None if self.added is None else tuple(sorted((k, tuple(v.shape[1:])) for k, v in self.added.items()))
        self.key = (tuple(self.sample.shape[1:]), self.sample.dtype, self.sample.device, self.context.shape[-1],
                    self.context.dtype, added)

    @property
    def rows(self) -> int:
        return self.sample.shape[0]


class UNetBatcher:
    """Gathers the calls of the participants that sample with one UNet (see the module's docstring)."""

    def __init__(self, unet: torch.nn.Module, max_batch: int, window: float = DEFAULT_WINDOW,
                 compute: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 prompts_running: Callable[[], int] | None = None):
        self.unet = unet
        # prompts running beside each other on this server (sampling or not yet): see _ready_group
        self._prompts_running = prompts_running
        self.max_batch = max(1, int(max_batch))
        self.window = window
        self._compute = compute  # the device's turn for a forward (ModelCache.compute)
        # One lock for the batcher's state; each waiting caller sleeps on a condition of its own over it, so that
        # a forward's end wakes its callers and nobody else, and a queued call wakes nobody: the caller whose call
        # completes a group finds it ready itself (waking every waiter at every call cost O(callers^2) thread
        # switches per step, measured as most of the time between two shared forwards on a 2-core CPU).
        self._lock = threading.Lock()
        self._participants = 0
        self._next_id = 0
        self._called: set[int] = set()  # participants that have made a call
        self._queue: list[_Call] = []
        self._running = False  # a forward is in flight (one at a time, see the module's docstring)
        self._last_end = 0.0  # time.monotonic() when the last forward ended
        self._turns: deque[_Call] = deque()  # done calls whose callers wait for their turn to take their output
        self._row_limits: dict[tuple, tuple[int, float]] = {}  # call key -> (rows, when measured)
        # What happened, for /system_stats, tests and benchmarks: the rows of the latest forwards (bounded), and
        # totals of forwards, of those shared by several prompts, and of rows.
        self.forwards: deque[int] = deque(maxlen=1000)
        self.counters = {"forwards": 0, "shared_forwards": 0, "rows": 0}

    @contextmanager
    def participant(self) -> Iterator[BatchedUNet]:
        with self._lock:
            self._participants += 1
            self._next_id += 1
            ident = self._next_id
        try:
            yield BatchedUNet(self, ident)
        finally:
            with self._lock:
                self._participants -= 1
                self._called.discard(ident)
                self._pass_turn()
                self._wake_queued()  # the others may now be all there is to wait for

    # --- the call --------------------------------------------------------------------------------------------------

    def call(self, participant: int, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
             added: dict[str, torch.Tensor] | None, down: Any, mid: torch.Tensor | None) -> torch.Tensor:
        timestep = _per_row(timestep, sample.shape[0], sample.device)
        call = _Call(participant, sample, timestep, context, added, down, mid)
        call.wake = threading.Condition(self._lock)
        group: list[_Call] | None = None
        with self._lock:
            self._pass_turn()  # this caller has stepped: the next one takes its output
            call.first = participant not in self._called
            self._called.add(participant)
            self._queue.append(call)
            while not call.released:
                if call.done:  # the output is ready; the caller's turn to take it has not come yet
                    if not call.wake.wait(timeout=HANDOFF_TIMEOUT) and not call.released:
                        call.released = True  # the turn did not come in time (a long step): take it anyway
                        self._turns.remove(call)
                elif not call.taken and not self._running:
                    group = self._ready_group(call)
                    if group is not None:
                        for c in group:
                            c.taken = True
                            self._queue.remove(c)
                        self._running = True
                        break
                    since = max(call.queued_at, self._last_end)
                    wait = max(self.window - (time.monotonic() - since), call.hold_until - time.monotonic())
                    call.wake.wait(timeout=max(wait, 0.001))
                else:  # a forward is running (maybe holding this call): woken by its turn, or look again
                    call.wake.wait(timeout=TAKEN_RECHECK)
        if group is not None:
            self._run_group(group, call)
        if call.error is not None:
            raise call.error
        if call.alone:
            return self._forward([call])[0]
        assert call.result is not None
        return call.result

    def _ready_group(self, call: _Call) -> list[_Call] | None:
        """The calls to run now together with `call` (which is queued and not done), or None to keep waiting."""
        key = call.key
        others = [c for c in self._queue if c is not call and c.key == key]
        # Only a call that could share a forward needs the row limit (reading free memory is not free).
        limit = self._row_limit(key, call.sample) if others else self.max_batch
        # In queue order, as many compatible calls as fit under the row limit, `call` always among them.
        group, rows = [call], call.rows
        for other in others:
            if rows + other.rows <= limit:
                group.append(other)
                rows += other.rows
        everyone_waiting = len({c.participant for c in self._queue}) >= self._participants
        full = rows >= limit or len(group) < len(others) + 1
        since = max(min(c.queued_at for c in group), self._last_end)
        expired = time.monotonic() - since >= self.window
        if everyone_waiting and not full and self._others_may_join(group):
            # a first call waits for the prompts beside it, up to FIRST_CALL_WINDOW after it came
            hold_until = min(c.queued_at for c in group) + FIRST_CALL_WINDOW
            if time.monotonic() < hold_until:
                call.hold_until = hold_until
                return None
        if everyone_waiting or full or expired:
            return group
        return None

    def _others_may_join(self, group: list[_Call]) -> bool:
        """A prompt that starts sampling while other prompts run beside it that do not sample yet waits up to
        FIRST_CALL_WINDOW for them (they are often a moment behind: their clients sent them a moment later): starting alone,
        it ran a small forward of its own, came one step ahead, and the prompts stayed in two groups to the end,
        each with small forwards of its own (measured at 8 clients: two prompts whose clients came back ~100 ms
        before the other six). Only first calls wait, so a prompt beside one that does something else (an upscale)
        waits once, and a prompt alone on the server never."""
        if self._prompts_running is None or not any(c.first for c in group):
            return False
        return self._prompts_running() > self._participants

    def _row_limit(self, key: tuple, sample: torch.Tensor) -> int:
        """Rows one shared forward may hold: max_batch, and no more than the memory free for the work allows (the
        same per-row estimate that refuses a too-large latent before sampling, memory.py)."""
        from .memory import available_bytes, unet_call_bytes

        cached = self._row_limits.get(key)
        now = time.monotonic()
        if cached is None or now - cached[1] > ROW_LIMIT_TTL:
            try:
                per_row = unet_call_bytes(self.unet, (1, *sample.shape[1:]), 1)
                by_memory = int(available_bytes(sample.device) // max(per_row, 1))
            except Exception:  # an estimate that cannot be made does not stop the batching
                by_memory = self.max_batch
            cached = self._row_limits[key] = (by_memory, now)
        return max(1, min(self.max_batch, cached[0]))

    def _run_group(self, group: list[_Call], own: _Call) -> None:
        error: BaseException | None = None
        outputs: list[torch.Tensor] | None = None
        try:
            outputs = self._forward(group)
        except BaseException as exc:  # whatever happens, the others must not wait forever for this forward
            error = exc
        with self._lock:
            self._running = False
            self._last_end = time.monotonic()
            for i, c in enumerate(group):
                if outputs is not None:
                    c.result = outputs[i]
                elif len(group) == 1:
                    c.error = error  # nothing was shared: the caller's own call failed
                else:
                    c.alone = True  # which of them failed is not known: each runs its own call again, alone
                c.done = True
                if c is own:
                    c.released = True
                else:
                    self._turns.append(c)
            self._wake_queued()  # calls that came during the forward: one of them may run the next

    def _pass_turn(self) -> None:
        """Let the next caller whose output is ready take it (the lock is held).

        The callers of a shared forward take their outputs one after another: each is woken when the one before it
        has stepped its sampler and called again (or left). Woken all at once, they stepped side by side, and each
        step's small tensor operations passed the GIL from thread to thread at every operation: measured on a
        2-core CPU, 8 prompts' steps took ~8 ms that way against ~2 ms one after another, between forwards of 40."""
        while self._turns:
            c = self._turns.popleft()
            if not c.released:
                c.released = True
                if c.wake is not None:
                    c.wake.notify()
                return

    def _wake_queued(self) -> None:
        """Let every queued call that no forward holds look again whether it can run (the lock is held)."""
        for c in self._queue:
            if not c.taken and c.wake is not None:
                c.wake.notify()

    def _forward(self, group: list[_Call]) -> list[torch.Tensor]:
        """Run the calls of `group` as one UNet forward and split the output back per call."""
        rows = [c.rows for c in group]
        tokens = math.lcm(*(c.context.shape[1] for c in group))
        context = torch.cat([c.context.repeat(1, tokens // c.context.shape[1], 1) for c in group])
        sample = torch.cat([c.sample for c in group])
        timestep = torch.cat([c.timestep for c in group])
        added = None
        if group[0].added is not None:
            added = {k: torch.cat([c.added[k] for c in group]) for k in group[0].added}  # type: ignore[index]
        down, mid = _residuals(group)
        _local.shared = len(group) > 1
        try:
            # Sampling runs in inference mode on each prompt's thread; the mode is per thread, and the thread that
            # runs a shared forward must not record autograd history for the others' tensors either.
            with torch.inference_mode(), self._compute():
                out = self.unet(
                    sample, timestep, encoder_hidden_states=context, added_cond_kwargs=added,
                    down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
                )[0]
        finally:
            _local.shared = False
        with self._lock:
            self.forwards.append(sum(rows))
            self.counters["forwards"] += 1
            self.counters["shared_forwards"] += len(group) > 1
            self.counters["rows"] += sum(rows)
        return list(out.split(rows))


def _per_row(timestep: torch.Tensor | float, rows: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t.repeat(rows)
    return t


def _residuals(group: list[_Call]) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    """ControlNet residuals for the whole batch: each call's own, zeros for calls without."""
    having = [c for c in group if c.down is not None]
    if not having:
        return None, None
    like_down, like_mid = having[0].down, having[0].mid
    down = [
        torch.cat([(c.down[i] if c.down is not None else r.new_zeros((c.rows, *r.shape[1:]))) for c in group])
        for i, r in enumerate(like_down)  # type: ignore[arg-type]
    ]
    mid = None
    if like_mid is not None:
        mid = torch.cat([(c.mid if c.mid is not None else like_mid.new_zeros((c.rows, *like_mid.shape[1:])))
                         for c in group])
    return down, mid


class BatchedUNet:
    """What a sampling prompt holds instead of the UNet: calls go through the batcher; everything else (device,
    dtype, config, blocks, parameters) is the UNet's own."""

    def __init__(self, batcher: UNetBatcher, ident: int):
        self._batcher = batcher
        self._ident = ident

    @property
    def module(self) -> torch.nn.Module:
        return self._batcher.unet

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batcher.unet, name)

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor | None = None,
                 *args: Any, added_cond_kwargs: dict[str, torch.Tensor] | None = None,
                 down_block_additional_residuals: Any = None, mid_block_additional_residual: Any = None,
                 return_dict: bool = False, **kwargs: Any) -> Any:
        unet = self._batcher.unet
        if args or kwargs or encoder_hidden_states is None or return_dict:
            # anything the batcher does not know how to stack runs as it is
            return unet(sample, timestep, encoder_hidden_states, *args, added_cond_kwargs=added_cond_kwargs,
                        down_block_additional_residuals=down_block_additional_residuals,
                        mid_block_additional_residual=mid_block_additional_residual, return_dict=return_dict,
                        **kwargs)
        out = self._batcher.call(self._ident, sample, timestep, encoder_hidden_states, added_cond_kwargs,
                                 down_block_additional_residuals, mid_block_additional_residual)
        return (out,)
