"""Execution: order, the output cache rules (counted executions), events, errors, interrupts, async nodes."""
import asyncio

import pytest

import support.engine_nodes as fx
from nodegraph.engine import Executor, NullCache, OutputCache, validate_prompt
from nodegraph.run_once import PromptRunner


@pytest.fixture(autouse=True)
def reset_calls():
    fx.CALLS.clear()
    fx.Stamp.WORLD["version"] = 1


@pytest.fixture(scope="module")
def registry():
    return fx.make_registry()


def chain(bias=0, value=1, label="out"):
    """1 -> 2 -> 3(output), plus an unused branch 4 that no output needs."""
    return {
        "1": {"class_type": "Const", "inputs": {"value": value}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0], "bias": bias}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": label}},
        "4": {"class_type": "Const", "inputs": {"value": 9}},
    }


async def run(executor, registry, prompt, events=None, prompt_id="p"):
    runner = PromptRunner(registry=registry, executor=executor)
    result = runner.validate(prompt)
    assert result.ok, result.node_errors
    on_event = (lambda e, d: events.append((e, d))) if events is not None else None
    return await runner.run_async(result, prompt_id, on_event=on_event)


async def test_runs_only_needed_nodes_in_order(registry):
    events = []
    res = await run(Executor(), registry, chain(), events)
    assert res.status == "success"
    assert res.outputs == {"3": {"value": [2], "label": ["out"]}}
    assert res.executed == ["1", "2", "3"] and "4" not in fx.CALLS
    names = [e for e, _ in events]
    assert names == [
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executing",
        "executed",
        "execution_success",
    ]
    assert [d["node"] for e, d in events if e == "executing"] == ["1", "2", "3"]
    assert all(d["prompt_id"] == "p" for _, d in events)
    assert all(isinstance(d["timestamp"], int) for e, d in events if e.startswith("execution_"))
    assert set(res.timings) == {"1", "2", "3"} and all(t >= 0 for t in res.timings.values())


async def test_identical_rerun_executes_nothing(registry):
    executor = Executor()
    await run(executor, registry, chain())
    fx.CALLS.clear()
    events = []
    res = await run(executor, registry, chain(), events)
    assert sum(fx.CALLS.values()) == 0
    assert res.cached == ["1", "2", "3"] and res.executed == []
    assert ("execution_cached", {"nodes": ["1", "2", "3"]}) in [
        (e, {"nodes": d["nodes"]}) for e, d in events if e == "execution_cached"
    ]
    # the output node's stored UI output is sent again
    assert [d["output"] for e, d in events if e == "executed"] == [{"value": [2], "label": ["out"]}]
    assert res.outputs == {"3": {"value": [2], "label": ["out"]}}


async def test_changing_one_literal_reruns_only_downstream(registry):
    executor = Executor()
    await run(executor, registry, chain(bias=0))
    fx.CALLS.clear()
    res = await run(executor, registry, chain(bias=5))
    assert dict(fx.CALLS) == {"2": 1, "3": 1}
    assert res.cached == ["1"] and res.outputs["3"]["value"] == [7]
    fx.CALLS.clear()
    await run(executor, registry, chain(bias=5, label="other"))
    assert dict(fx.CALLS) == {"3": 1}


async def test_renumbered_graph_hits_the_cache(registry):
    executor = Executor()
    await run(executor, registry, chain())
    fx.CALLS.clear()
    renumbered = {
        "10": {"class_type": "Const", "inputs": {"value": 1}},
        "20": {"class_type": "Add", "inputs": {"a": ["10", 0], "b": ["10", 0], "bias": 0}},
        "30": {"class_type": "Collect", "inputs": {"value": ["20", 0], "label": "out"}},
    }
    res = await run(executor, registry, renumbered)
    assert sum(fx.CALLS.values()) == 0 and res.outputs["30"]["value"] == [2]


async def test_fingerprint_reruns_when_the_world_changes(registry):
    executor = Executor()
    prompt = {
        "1": {"class_type": "Stamp", "inputs": {}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0], "label": ""}},
    }
    await run(executor, registry, prompt)
    await run(executor, registry, prompt)
    assert dict(fx.CALLS) == {"1": 1, "2": 1}
    fx.Stamp.WORLD["version"] = 2
    res = await run(executor, registry, prompt)
    assert dict(fx.CALLS) == {"1": 2, "2": 2} and res.outputs["2"]["value"] == [2]


async def test_cache_bounded_by_entries(registry):
    cache = OutputCache(max_entries=2)
    executor = Executor(cache=cache)
    await run(executor, registry, chain())
    assert len(cache) == 2 and cache.evictions == 1
    fx.CALLS.clear()
    await run(executor, registry, chain())  # node 1 was evicted (least recently used); 2 and 3 still hit
    assert sum(fx.CALLS.values()) == 0


async def test_cache_bounded_by_bytes(registry):
    cache = OutputCache(max_entries=100, max_bytes=1)
    executor = Executor(cache=cache)
    await run(executor, registry, chain())
    assert len(cache) == 1  # only the newest entry is kept when each is over budget


async def test_null_cache_recomputes(registry):
    executor = Executor(cache=NullCache())
    await run(executor, registry, chain())
    await run(executor, registry, chain())
    assert dict(fx.CALLS) == {"1": 2, "2": 2, "3": 2}


async def test_node_error_is_structured_and_keeps_cache_consistent(registry):
    executor = Executor()
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": ""}},
    }
    events = []
    res = await run(executor, registry, prompt, events)
    assert res.status == "error"
    err = res.error
    assert err["node_id"] == "2" and err["node_type"] == "Fail"
    assert err["exception_type"] == "RuntimeError" and err["exception_message"] == "boom with 3"
    assert err["current_inputs"] == {"value": ["3"]}
    assert err["executed"] == ["1"]
    assert any("raise RuntimeError" in line for line in err["traceback"])
    assert events[-1][0] == "execution_error"
    # the failed node cached nothing; the successful one did
    fx.CALLS.clear()
    await run(executor, registry, prompt)
    assert dict(fx.CALLS) == {"2": 1}


async def test_interrupt_inside_a_long_node(registry):
    executor = Executor()
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 2000, "delay": 0.005}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": ""}},
    }
    events = []

    def on_event(event, data):
        events.append((event, data))
        if event == "progress" and data["value"] == 5:
            executor.interrupt()

    result = validate_prompt(prompt, registry)
    res = await executor.run(result.workflow, "p", on_event=on_event)
    assert res.status == "interrupted"
    assert res.error["node_id"] == "2" and res.error["executed"] == ["1"]
    assert events[-1][0] == "execution_interrupted"
    progress = [d["value"] for e, d in events if e == "progress"]
    assert 5 <= max(progress) < 2000
    # the interrupted node stored nothing; the next run clears the flag and completes
    fx.CALLS.clear()
    prompt["2"]["inputs"]["steps"] = 3
    res = await run(executor, registry, prompt)
    assert res.status == "success" and dict(fx.CALLS) == {"2": 1, "3": 1}


async def test_interrupt_between_nodes(registry):
    executor = Executor()
    events = []

    def on_event(event, data):
        events.append(event)
        if event == "executing" and data["node"] == "2":
            executor.interrupt()

    result = validate_prompt(chain(), registry)
    res = await executor.run(result.workflow, "p", on_event=on_event)
    assert res.status == "interrupted" and "3" not in fx.CALLS


async def test_async_node_and_event_loop_stays_free(registry):
    executor = Executor()
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 4}},
        "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 20, "delay": 0.01}},
        "3": {"class_type": "AsyncDouble", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Collect", "inputs": {"value": ["3", 0], "label": ""}},
    }
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    res = await run(executor, registry, prompt)
    task.cancel()
    assert res.outputs["4"]["value"] == [8]
    assert ticks >= 5  # the loop kept running while the sync node slept on the worker thread


async def test_progress_events_arrive_before_executed(registry):
    events = []
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 4}},
        "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 5, "delay": 0.0}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": ""}},
    }
    await run(Executor(), registry, prompt, events)
    seq = [(e, d.get("node")) for e, d in events if e in ("executing", "progress", "executed")]
    assert seq == [("executing", "1"), ("executing", "2")] + [("progress", "2")] * 5 + [
        ("executing", "3"),
        ("executed", "3"),
    ]


def slow_then_collect(label: str, steps: int = 20) -> dict:
    return {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": steps, "delay": 0.01}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": label}},
    }


async def _started(executor: Executor, registry, prompt: dict, prompt_id: str, on_event=None):
    """Run `prompt` on `executor` as a task; return the task once its Slow node reported progress (is running)."""
    running = asyncio.Event()

    def events(event, data):
        if event == "progress":
            running.set()
        if on_event is not None:
            on_event(event, data)

    workflow = validate_prompt(prompt, registry).workflow
    task = asyncio.create_task(executor.run(workflow, prompt_id, on_event=events))
    await asyncio.wait_for(running.wait(), 10)
    return task


async def _run_beside(task, executor, registry, prompt, events):
    """Run `prompt` as "b" on `executor` while `task` runs; wait for both and return b's result."""
    res = await executor.run(validate_prompt(prompt, registry).workflow, "b",
                             on_event=lambda e, d: events.append((e, d)))
    await task
    return res


async def test_prompts_side_by_side_share_a_node_in_progress(registry):
    # Executors of one server (serve --concurrency) share the cache: the second prompt needs the Slow node the
    # first one is computing, and waits for its result instead of computing it again.
    cache = OutputCache()
    first, second = Executor(cache=cache), Executor(cache=cache)
    task = await _started(first, registry, slow_then_collect("a"), "a")
    events = []
    res_b = await _run_beside(task, second, registry, slow_then_collect("b"), events)
    res_a = task.result()
    assert res_a.status == res_b.status == "success"
    assert res_a.outputs["3"] == {"value": [3], "label": ["a"]} and res_b.outputs["3"] == {"value": [3], "label": ["b"]}
    assert fx.CALLS["2"] == 1 and cache.stats()["shared"] == 1
    # the waiting prompt still reports the node as executing, then its own output
    assert [d["node"] for e, d in events if e == "executing"] == ["2", "3"]
    assert res_b.executed == ["2", "3"]


async def test_a_prompt_waiting_for_a_node_runs_its_own_when_the_other_is_interrupted(registry):
    cache = OutputCache()
    first, second = Executor(cache=cache), Executor(cache=cache)

    def stop_first(event, data):
        if event == "progress" and data["value"] == 5:
            first.interrupt()

    task = await _started(first, registry, slow_then_collect("a", steps=30), "a", stop_first)
    res_b = await _run_beside(task, second, registry, slow_then_collect("b", steps=30), [])
    assert task.result().status == "interrupted"
    assert res_b.status == "success" and res_b.outputs["3"]["value"] == [3]
    assert fx.CALLS["2"] == 2 and cache.stats()["shared"] == 0


async def test_interrupting_a_waiting_prompt_leaves_the_computing_one_running(registry):
    cache = OutputCache()
    first, second = Executor(cache=cache), Executor(cache=cache)
    task = await _started(first, registry, slow_then_collect("a", steps=100), "a")
    waiting = asyncio.create_task(second.run(validate_prompt(slow_then_collect("b", steps=100), registry).workflow,
                                             "b"))
    await asyncio.sleep(0.1)
    second.interrupt()
    res_b = await asyncio.wait_for(waiting, 5)
    assert res_b.status == "interrupted" and not task.done()
    assert (await task).status == "success" and fx.CALLS["2"] == 1
