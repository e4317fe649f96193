"""Runs a validated workflow: cache lookup, node work off the event loop, events.

Validation plans the run (`Workflow.order`, see `workflow.run_order`): a node runs after every node it takes a link
from, and only nodes that an output needs (and that are not cached) run. Among independent nodes the order is a
deterministic topological order with node ids as the tie-break; nothing else is promised, so clients must not rely
on one independent branch running first.

A run is three kinds of step: `Executor.run` (keys, cache, the loop over the plan), `Executor._run_node` (one node)
and the reports of `_Run` (events and the `RunResult`).

Events (ComfyUI's message names, docs/compat.md §2.3) go to the `on_event(event, data)` callback on the event loop's
thread: execution_start, execution_cached, executing, progress, preview, executed, execution_success,
execution_error, execution_interrupted. Sync node methods run on one worker thread (nodes share one device);
async ones are awaited on the loop.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Executor as _FuturesExecutor
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from .cache import OutputCache, node_key
from .errors import exception_type_name, execution_error, execution_interrupted, now_ms, traceback_of
from .limits import Limits, check_link_outputs, describe, ui_size
from .folders import Folders
from .node import Interrupted, NodeContext, NodeResult, normalize_result, preview_method_of
from .runtime import Runtime
from .spec import Combo, InputError, _check_range, _Number
from .workflow import NodeSpec, Workflow

EventCallback = Callable[[str, dict[str, Any]], None]


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success" | "error" | "interrupted"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> ui output
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # node id -> seconds, executed nodes only
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # node id -> link outputs of this run

    @property
    def ok(self) -> bool:
        return self.status == "success"


class NodeThread(_FuturesExecutor):
    """One daemon thread that runs node work in submission order.

    A daemon, unlike ThreadPoolExecutor's workers (which the interpreter joins at exit), so that a node stuck in
    code that never checks for interrupts cannot keep the process alive after the server was asked to stop.
    """

    def __init__(self, name: str = "nodegraph-node"):
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.busy = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the node thread is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put((future, fn, args, kwargs))
        return future

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            self.busy = True
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                self.busy = False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._queue.put(None)
        if wait and self._thread is not None:
            self._thread.join()


def _link_checks(spec: Any) -> list[tuple[str, Any]]:
    """(input name, declaration) of the linked numeric inputs whose range must be checked at run time."""
    checks = []
    for name in spec.links:
        decl = spec.cls.inputs.get(name)
        if isinstance(decl, _Number) and (decl.min is not None or decl.max is not None):
            checks.append((name, decl))
        elif isinstance(decl, Combo) and decl.strict and not callable(decl._choices):
            checks.append((name, decl))  # a fixed list (folder listings are checked by the nodes that read them)
    return checks


class Executor:
    """One per process (or per device): owns the output cache and the worker thread."""

    def __init__(self, runtime: Runtime | Folders | None = None, cache: OutputCache | None = None,
                 previews: bool = True, limits: Limits | None = None):
        # Executors given one Runtime share its resources (the model cache); given folders, this one has its own.
        self.runtime = Runtime.of(runtime)
        self.previews = previews
        self.limits = limits if limits is not None else Limits()
        self.cache = cache if cache is not None else OutputCache()
        self._worker = NodeThread()
        self._interrupt = threading.Event()
        self.running_prompt: str | None = None

    def interrupt(self) -> None:
        """Stop the running workflow at the next node boundary or progress report."""
        self._interrupt.set()

    @property
    def env(self) -> Folders | None:
        """The runtime's folders (what node classes get as `env` for fingerprints and input checks)."""
        return self.runtime.folders

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def free(self, unload_models: bool, free_memory: bool) -> None:
        """ComfyUI's /free: drop cached outputs (`free_memory`) and ask every memory owner (the model cache) to
        give memory back, in a thread since an owner may wait for a model in use by a running node."""
        if free_memory:
            self.cache.clear()
        owners = self.runtime.owners()
        if owners:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: [owner.free(unload_models=unload_models, free_memory=free_memory) for owner in owners]
            )

    # --- keys ----------------------------------------------------------------------------------------------------

    def compute_keys(self, workflow: Workflow, order: list[str]) -> dict[str, str]:
        keys: dict[str, str] = {}
        for nid in order:
            spec = workflow.nodes[nid]
            try:
                fingerprint = spec.cls.fingerprint(self.env, **spec.constants)
            except Exception:
                fingerprint = float("nan")  # a failing fingerprint means "unknown", so always run
            links = {name: (keys[link.node], link.slot) for name, link in spec.links.items()}
            keys[nid] = node_key(
                spec.class_type if spec.class_type == spec.cls.type_name else spec.cls.type_name,
                fingerprint,
                spec.constants,
                links,
                node_id=nid if spec.cls.not_idempotent else None,
            )
        return keys

    # --- running -------------------------------------------------------------------------------------------------

    async def run(
        self,
        workflow: Workflow,
        prompt_id: str,
        extra_data: dict[str, Any] | None = None,
        on_event: EventCallback | None = None,
    ) -> RunResult:
        """Run the nodes the outputs need, in `workflow.order`, reusing cached outputs; report every step."""
        run = _Run(workflow, prompt_id, extra_data or {}, on_event, self.previews)
        self._interrupt.clear()
        self.running_prompt = prompt_id
        with self.runtime.running_prompt():
            return await self._run(run)

    async def _run(self, run: _Run) -> RunResult:
        workflow = run.workflow
        try:
            # Off the loop: fingerprints read files (LoadImage hashes its image), and big graphs have many keys.
            keys = await run.loop.run_in_executor(None, self.compute_keys, workflow, workflow.order)
            run.emit("execution_start", {})
            to_run = self._use_cache(run, keys)
            for nid in workflow.order:
                if nid in to_run and not await self._run_node(run, nid, keys[nid]):
                    return run.result
            run.emit("execution_success", {})
            return run.result
        except Interrupted:
            await asyncio.sleep(0)
            run.interrupted()
            return run.result
        finally:
            self.running_prompt = None

    def _use_cache(self, run: _Run, keys: dict[str, str]) -> set[str]:
        """Take what the cache holds, report it, and return the nodes that must run."""
        workflow, values = run.workflow, run.result.values
        cached_ui: dict[str, dict[str, Any] | None] = {}
        to_run: set[str] = set()
        # Walk back from the outputs; a cached node's inputs are not needed at all.
        stack = list(workflow.outputs)
        while stack:
            nid = stack.pop()
            if nid in values or nid in to_run:
                continue
            entry = self.cache.get(keys[nid])
            if entry is not None:
                values[nid] = entry.outputs  # pinned for this run even if the cache evicts it meanwhile
                cached_ui[nid] = entry.ui
                continue
            to_run.add(nid)
            stack.extend(workflow.nodes[nid].sources())
        # ComfyUI lists every node of the workflow whose result is cached, not only the ones it stopped at.
        for nid in workflow.order:
            if nid not in values and nid not in to_run and keys[nid] in self.cache:
                values[nid] = self.cache.get(keys[nid]).outputs  # type: ignore[union-attr]
        run.cached([nid for nid in workflow.order if nid in values], cached_ui)
        return to_run

    async def _run_node(self, run: _Run, nid: str, key: str) -> bool:
        """Run one node and keep its outputs; False when it failed (the error is reported)."""
        if self._interrupt.is_set():
            raise Interrupted("interrupted")
        spec = run.workflow.nodes[nid]
        run.current = nid
        run.emit("executing", {"node": nid, "display_node": nid})
        if await self._take_shared(run, nid, key):
            return True
        kwargs = run.inputs_of(spec)
        problem = self._check_linked(spec, kwargs)
        if problem is not None:
            run.failed(nid, spec, kwargs, problem)
            return False
        node = spec.cls()
        node.context = run.context(nid, spec, self.runtime, self._interrupt.is_set)
        started = time.perf_counter()
        computing = self.cache.start(key)
        try:
            out = await self._execute(run, spec, node, kwargs)
        except Interrupted:
            raise
        except Exception as exc:
            run.result.timings[nid] = time.perf_counter() - started
            await asyncio.sleep(0)  # deliver progress events queued by the worker before the error
            run.failed(nid, spec, kwargs, exc)
            return False
        finally:
            self.cache.finish(key, computing)
        run.result.timings[nid] = time.perf_counter() - started
        run.executed(nid, out.outputs)
        self.cache.put(key, out.outputs, out.ui)
        await asyncio.sleep(0)  # flush progress events from the worker thread in order
        run.show(nid, out.ui)
        return True

    async def _take_shared(self, run: _Run, nid: str, key: str) -> bool:
        """If another prompt running beside this one is computing the same key, wait for it and take its result
        (see cache.py); False when there is nothing to wait for or it stored nothing (failed, interrupted)."""
        computing = self.cache.computing(key)
        if computing is None:
            return False
        started = time.perf_counter()
        while not computing.done():  # an interrupt of this prompt must not wait for the other one's node
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            await asyncio.wait([computing], timeout=0.05)
        entry = self.cache.get(key)
        if entry is None:
            return False
        self.cache.shared += 1
        run.result.timings[nid] = time.perf_counter() - started
        run.executed(nid, entry.outputs)
        run.show(nid, entry.ui)
        return True

    async def _execute(self, run: _Run, spec: NodeSpec, node: Any, kwargs: dict[str, Any]) -> NodeResult:
        """The node's own work: async nodes on the loop, the others on the node thread; outputs checked."""
        if spec.cls.is_async():
            raw = await node.execute(**kwargs)
        else:
            raw = await run.loop.run_in_executor(self._worker, lambda: node.execute(**kwargs))
        out = normalize_result(spec.cls, raw)
        self._check_outputs(out)
        return out

    @staticmethod
    def _check_linked(spec: Any, kwargs: dict[str, Any]) -> Exception | None:
        """Linked numbers against the receiving input's range (validation saw only literals)."""
        for name, decl in _link_checks(spec):
            value = kwargs.get(name)
            if isinstance(decl, Combo):
                if value not in decl.choices():
                    link = spec.links[name]
                    return ValueError(f"input '{name}' received {describe(value, 60)} from node {link.node} "
                                      f"(output {link.slot}), which is not one of its choices")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            try:
                _check_range(decl, value)
            except InputError:
                link = spec.links[name]
                low = "" if decl.min is None else f"{decl.min}"
                high = "" if decl.max is None else f"{decl.max}"
                return ValueError(f"input '{name}' received {describe(value, 60)} from node {link.node} "
                                  f"(output {link.slot}), outside its range {low}..{high}")
        return None

    def _check_outputs(self, out: Any) -> None:
        problem = check_link_outputs(out.outputs, self.limits)
        if problem is not None:
            raise ValueError(f"{problem}; a workflow that grows values step by step (string doubling, integer "
                             "powers) is stopped here")
        if out.ui:
            size = ui_size(out.ui, self.limits.max_ui_bytes)
            if size < 0:
                raise ValueError("the node's display output cannot be written as JSON (too long a number, or a "
                                 "circular structure)")
            if size > self.limits.max_ui_bytes:
                raise ValueError(f"the node's display output is more than {self.limits.max_ui_bytes:,} bytes of "
                                 "JSON, the limit for what goes to the history and the websocket "
                                 "(--max-output-size)")



class _Run:
    """One run of a workflow: its result, the values passed along links, and the events it reports."""

    def __init__(self, workflow: Workflow, prompt_id: str, extra_data: dict[str, Any],
                 on_event: EventCallback | None, previews: bool):
        self.loop = asyncio.get_running_loop()
        self.workflow = workflow
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self.on_event = on_event
        # The prompt's extra_data.preview_method (the server puts its default there); without previews: none.
        self.preview_method = preview_method_of(extra_data, "auto") if previews else "none"
        self.result = RunResult(prompt_id, "success")
        self.current: str | None = None  # the node running now, for error and interrupt reports

    # --- events --------------------------------------------------------------------------------------------------

    def emit(self, event: str, data: dict[str, Any]) -> None:
        data = {**data, "prompt_id": self.prompt_id}
        if event.startswith("execution_"):
            data["timestamp"] = now_ms()
        if event not in ("progress", "preview"):
            self.result.messages.append((event, data))
        if self.on_event is not None:
            self.on_event(event, data)

    def emit_threadsafe(self, event: str, data: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self.emit, event, data)

    def cached(self, nodes: list[str], cached_ui: dict[str, dict[str, Any] | None]) -> None:
        self.result.cached = nodes
        self.emit("execution_cached", {"nodes": list(nodes)})
        for nid in nodes:
            if cached_ui.get(nid):
                self.show(nid, cached_ui[nid])

    def executed(self, nid: str, outputs: tuple[Any, ...]) -> None:
        self.result.values[nid] = outputs
        self.result.executed.append(nid)

    def show(self, nid: str, ui: dict[str, Any] | None) -> None:
        """A node's display output (images, text) for the history and the client."""
        if ui:
            self.result.outputs[nid] = ui
            self.emit("executed", {"node": nid, "display_node": nid, "output": ui})

    def failed(self, nid: str, spec: NodeSpec, kwargs: dict[str, Any], exc: Exception) -> None:
        result = self.result
        result.status = "error"
        result.error = execution_error(
            str(exc) or type(exc).__name__,
            exception_type_name(exc),
            node_id=nid,
            node_type=spec.class_type,
            executed=result.cached + result.executed,
            traceback=traceback_of(exc),
            current_inputs={name: [describe(value, 200)] for name, value in kwargs.items()},
            current_outputs=result.values,
        )
        self.emit("execution_error", result.error)

    def interrupted(self) -> None:
        result = self.result
        result.status = "interrupted"
        result.error = execution_interrupted(
            self.current, self.workflow.nodes[self.current].class_type if self.current is not None else None,
            result.cached + result.executed,
        )
        self.emit("execution_interrupted", result.error)

    # --- one node ------------------------------------------------------------------------------------------------

    def inputs_of(self, spec: NodeSpec) -> dict[str, Any]:
        kwargs = dict(spec.constants)
        for name, link in spec.links.items():
            kwargs[name] = self.result.values[link.node][link.slot]
        return kwargs

    def context(self, nid: str, spec: NodeSpec, runtime: Runtime, interrupted: Callable[[], bool]) -> NodeContext:
        return NodeContext(
            node_id=nid,
            prompt_id=self.prompt_id,
            runtime=runtime,
            prompt=self.workflow.prompt,
            extra_data=self.extra_data,
            report=self.emit_threadsafe if not spec.cls.is_async() else self.emit,
            interrupted=interrupted,
            previews=self.preview_method != "none",
            preview_method=self.preview_method,
        )

