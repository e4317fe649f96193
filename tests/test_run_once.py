"""nodegraph.run_once.PromptRunner: validate, then run on one executor (the glue the CLI, tests and benches share)."""
import subprocess
import sys

import pytest

import support.engine_nodes as fx
from nodegraph.run_once import InvalidPrompt, PromptRunner
from support import ROOT


def prompt(value: int = 2, label: str = "x") -> dict:
    return {
        "1": {"class_type": "Const", "inputs": {"value": value}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "bias": 1}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": label}},
    }


def test_runs_a_valid_prompt_and_keeps_the_executor_cache_between_runs():
    runner = PromptRunner(registry=fx.make_registry())
    fx.CALLS.clear()
    first = runner.run(prompt(), "a")
    assert first.ok and first.prompt_id == "a"
    assert first.outputs == {"3": {"value": [3], "label": ["x"]}}
    second = runner.run(prompt(label="y"), "b")  # only the changed output node runs again
    assert second.outputs["3"] == {"value": [3], "label": ["y"]}
    assert sorted(second.cached) == ["1", "2"] and second.executed == ["3"]
    assert dict(fx.CALLS) == {"1": 1, "2": 1, "3": 2}


def test_an_invalid_prompt_raises_with_every_problem_and_runs_nothing():
    runner = PromptRunner(registry=fx.make_registry())
    bad = prompt()
    bad["1"]["inputs"]["value"] = 5000  # above the maximum of 1000
    bad["2"]["inputs"]["bias"] = -5000  # below the minimum of -1000
    fx.CALLS.clear()
    with pytest.raises(InvalidPrompt) as raised:
        runner.run(bad)
    checked = raised.value.checked
    assert not checked.ok and checked.error["type"] == "prompt_outputs_failed_validation"
    assert {nid: [e["type"] for e in entry["errors"]] for nid, entry in checked.node_errors.items()} == {
        "1": ["value_bigger_than_max"], "2": ["value_smaller_than_min"]}
    assert "value_bigger_than_max" in str(raised.value)
    assert not fx.CALLS


def test_a_validation_result_is_run_as_is_and_events_reach_the_callback():
    runner = PromptRunner(registry=fx.make_registry())
    checked = runner.validate(prompt(7))
    assert checked.ok
    events = []
    result = runner.run(checked, "p", on_event=lambda event, data: events.append(event))
    assert result.outputs["3"]["value"] == [8]
    assert events[0] == "execution_start" and events[-1] == "execution_success"


def test_a_failing_node_is_reported_in_the_result_not_raised():
    runner = PromptRunner(registry=fx.make_registry())
    failing = {"1": {"class_type": "Const", "inputs": {"value": 4}},
               "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
               "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": ""}}}
    result = runner.run(failing)
    assert result.status == "error" and result.error["node_id"] == "2"
    assert result.error["exception_message"] == "boom with 4"


def test_importing_it_loads_neither_torch_nor_the_server():
    code = "import sys, nodegraph.run_once; print(sorted({'torch', 'aiohttp', 'nodegraph.server'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
