"""The error payloads of ComfyUI's protocol, built in one place: plain dicts, no HTTP.

Two shapes travel to clients:

* a validation error (the body of POST /prompt's 400 answer and of the websocket's `prompt_error`):
  `{"error": {type, message, details, extra_info}, "node_errors": {node_id: {errors, dependent_outputs,
  class_type}}}`, where each entry of `errors` has the same four keys as the top-level error;
* an `execution_error` event (also kept in the history's status messages): the failing node, what had already run,
  the exception's message, type and traceback, and the inputs the node received.

The engine's validator and executor, the server (queue, worker, store) and the distributed pool all build these
through the functions here, so a client sees one shape whatever part of the system failed.
"""
from __future__ import annotations

import time
import traceback as _traceback
from typing import Any, Iterable

from .node import ExecutionBlocked


def now_ms() -> int:
    """Milliseconds since the epoch: the unit of ComfyUI's `timestamp` and `create_time` fields."""
    return int(time.time() * 1000)


# --- validation ------------------------------------------------------------------------------------------------


def validation_error(type: str, message: str, details: str, **extra_info: Any) -> dict[str, Any]:
    """One validation error: a top-level `error` or an entry of a node's `errors`."""
    return {"type": type, "message": message, "details": details, "extra_info": extra_info}


def validation_response(error: dict[str, Any] | None, node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of ComfyUI's 400 answer to a prompt (also sent as the websocket's `prompt_error`)."""
    return {"error": error, "node_errors": node_errors if node_errors is not None else {}}


def request_error(type: str, message: str, details: str, **extra_info: Any) -> dict[str, Any]:
    """A 400 body for a request refused before its nodes were looked at: a top-level error and no node errors."""
    return validation_response(validation_error(type, message, details, **extra_info))


# --- execution -------------------------------------------------------------------------------------------------


def execution_error(
    message: str,
    exception_type: str,
    *,
    node_id: str | None = None,
    node_type: str | None = None,
    executed: Iterable[str] = (),
    traceback: list[str] | None = None,
    current_inputs: dict[str, Any] | None = None,
    current_outputs: Iterable[str] = (),
    prompt_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """The data of an `execution_error` event.

    `prompt_id` and `timestamp` are left out when not given: the executor's event callback adds them as the event
    is sent.
    """
    data: dict[str, Any] = {} if prompt_id is None else {"prompt_id": prompt_id}
    data.update({
        "node_id": node_id,
        "node_type": node_type,
        "executed": list(executed),
        "exception_message": message,
        "exception_type": exception_type,
        "traceback": traceback if traceback is not None else [],
        "current_inputs": current_inputs if current_inputs is not None else {},
        "current_outputs": list(current_outputs),
    })
    if timestamp is not None:
        data["timestamp"] = timestamp
    return data


def execution_interrupted(node_id: str | None = None, node_type: str | None = None,
                          executed: Iterable[str] = ()) -> dict[str, Any]:
    """The data of an `execution_interrupted` event (and a run's `error` when it was interrupted): the node that was
    running, if any, and what had run before. `prompt_id` and `timestamp` are added as the event is sent."""
    return {"node_id": node_id, "node_type": node_type, "executed": list(executed)}


def exception_type_name(exc: BaseException) -> str:
    """The exception's class as ComfyUI reports it: qualified by its module unless it is a builtin.

    ExecutionBlocked keeps its bare name: clients match on it to tell a node that chose to stop from a failure.
    """
    if isinstance(exc, ExecutionBlocked):
        return "ExecutionBlocked"
    exc_type = type(exc)
    qualified = exc_type.__qualname__
    if exc_type.__module__ not in ("builtins", "__main__"):
        qualified = f"{exc_type.__module__}.{qualified}"
    return qualified


def traceback_of(exc: BaseException | None) -> list[str]:
    return _traceback.format_tb(exc.__traceback__) if exc is not None else []
