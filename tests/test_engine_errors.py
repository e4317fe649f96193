"""engine/errors.py: the one place that builds ComfyUI's error payloads, for the engine, the server and Ray workers.

The reference key sets are ComfyUI's (v0.3.75): the `execution_error` message of execution.py's
handle_execution_error (plus the `timestamp` its add_message stamps on `execution_*` messages), and the
`{"error": {type, message, details, extra_info}, "node_errors": {...}}` body of POST /prompt's 400 answer.
"""
import support.engine_nodes as fx
from nodegraph.engine import Executor, validate_prompt
from nodegraph.engine.errors import (
    execution_error,
    execution_interrupted,
    request_error,
    validation_error,
    validation_response,
)

COMFY_EXECUTION_ERROR_KEYS = {
    "prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type", "traceback",
    "current_inputs", "current_outputs", "timestamp",
}

# execution.py's message for an interrupted prompt (with the timestamp add_message stamps)
COMFY_EXECUTION_INTERRUPTED_KEYS = {"prompt_id", "node_id", "node_type", "executed", "timestamp"}


async def test_an_interrupted_run_reports_comfyuis_execution_interrupted_keys():
    registry = fx.make_registry()
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 1000, "delay": 0.005}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": ""}},
    }
    events = []
    executor = Executor()

    def on_event(event, data):
        events.append((event, data))
        if event == "progress":
            executor.interrupt()

    try:
        result = await executor.run(validate_prompt(prompt, registry).workflow, "p3", on_event=on_event)
    finally:
        executor.close()
    event, data = events[-1]
    assert event == "execution_interrupted" and set(data) == COMFY_EXECUTION_INTERRUPTED_KEYS
    assert data["node_id"] == "2" and data["node_type"] == "Slow" and data["executed"] == ["1"]
    assert result.error == execution_interrupted("2", "Slow", ["1"])
    # outside any node (the server stopping before the run, the Ray pool giving up): the same keys, no node
    assert set(execution_interrupted()) == COMFY_EXECUTION_INTERRUPTED_KEYS - {"prompt_id", "timestamp"}


async def test_a_failing_node_reports_comfyuis_execution_error_keys():
    registry = fx.make_registry()
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "label": ""}},
    }
    events = []
    executor = Executor()
    try:
        result = await executor.run(validate_prompt(prompt, registry).workflow, "p1",
                                    on_event=lambda event, data: events.append((event, data)))
    finally:
        executor.close()
    event, data = events[-1]
    assert event == "execution_error" and set(data) == COMFY_EXECUTION_ERROR_KEYS
    assert data["prompt_id"] == "p1" and data["current_outputs"] == ["1"]
    assert result.error is not None and set(result.error) == COMFY_EXECUTION_ERROR_KEYS - {"prompt_id", "timestamp"}


def test_a_failure_outside_any_node_has_the_same_keys():
    # As the server builds it when the executor fails, the store when the server stopped mid-run, the Ray pool when
    # its workers died: no node, nothing executed, empty inputs.
    data = execution_error("server stopped while running", "ServerStopped", prompt_id="p2", timestamp=1234)
    assert set(data) == COMFY_EXECUTION_ERROR_KEYS
    assert data["node_id"] is None and data["executed"] == [] and data["traceback"] == []
    assert data["current_inputs"] == {} and data["current_outputs"] == []
    # Without prompt_id / timestamp they are left for the event callback to add.
    assert set(execution_error("m", "T")) == COMFY_EXECUTION_ERROR_KEYS - {"prompt_id", "timestamp"}


def test_validation_bodies_have_comfyuis_shape():
    error = validation_error("required_input_missing", "Required input is missing", "seed: missing",
                             input_name="seed")
    assert error == {"type": "required_input_missing", "message": "Required input is missing",
                     "details": "seed: missing", "extra_info": {"input_name": "seed"}}
    assert validation_response(error, {"3": {"errors": [error]}}) == {"error": error,
                                                                      "node_errors": {"3": {"errors": [error]}}}
    assert request_error("invalid_prompt", "Invalid request", "bad") == {
        "error": {"type": "invalid_prompt", "message": "Invalid request", "details": "bad", "extra_info": {}},
        "node_errors": {},
    }
    registry = fx.make_registry()
    result = validate_prompt({"1": {"class_type": "Collect", "inputs": {"label": ""}}}, registry)
    body = result.response()
    assert set(body) == {"error", "node_errors"} and set(body["error"]) == {"type", "message", "details", "extra_info"}
    assert set(body["node_errors"]["1"]) == {"errors", "dependent_outputs", "class_type"}
