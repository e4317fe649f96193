"""Queueing a prompt: ComfyUI's POST /prompt semantics (docs/compat.md §1.3), shared by HTTP and the websocket."""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from ..engine import validate_prompt
from ..engine.errors import now_ms, request_error
from ..jobs import DuplicatePrompt, Job, QueueItem
from .bodies import BadRequest, finite_number, string_list
from .state import ServerState

log = logging.getLogger(__name__)

# Keys of extra_data that are credentials: handed to the run, never stored, listed or echoed.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAX_ID_LENGTH = 256


def prompt_error(type: str, message: str, details: str, **extra_info: Any) -> BadRequest:
    return BadRequest(details, body=request_error(type, message, details, **extra_info))


def _identifier(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise prompt_error("invalid_prompt", f"Invalid {what}", f"{what} must be a string, got {type(value).__name__}")
    text = str(value)
    if not text or len(text) > MAX_ID_LENGTH or not text.isprintable():
        raise prompt_error(
            "invalid_prompt", f"Invalid {what}", f"{what} must be 1..{MAX_ID_LENGTH} printable characters"
        )
    return text


def _missing_prompt_details(body: dict[str, Any]) -> str:
    """ComfyUI's message, plus what to do when the body is a workflow sent without the `{"prompt": ...}` wrapper."""
    if body and all(isinstance(v, dict) and "class_type" in v for v in body.values()):
        return ('No prompt provided: the body looks like an API-format workflow sent as it is; wrap it as '
                '{"prompt": <the workflow>, "client_id": "..."}')
    if isinstance(body.get("nodes"), list) and "links" in body:
        return ('No prompt provided: the body looks like a UI-format workflow (what the editor saves); convert it '
                'to the API format (`nodegraph convert FILE`) and send {"prompt": <the API workflow>}')
    return "No prompt provided"


def _stored_size(prompt: Any, extra_data: dict[str, Any]) -> int:
    """Bytes of JSON the queue and the history will store for this prompt."""
    try:
        return len(json.dumps(prompt, default=str)) + len(json.dumps(extra_data, default=str))
    except (ValueError, TypeError, RecursionError):
        return 0  # not storable as JSON at all: validation reports what is wrong with it


async def submit(state: ServerState, body: Any, default_client_id: str | None = None) -> dict[str, Any]:
    """Validate and queue; returns `{prompt_id, number, node_errors}` or raises BadRequest with ComfyUI's 400 body."""
    if not isinstance(body, dict):
        raise prompt_error("invalid_prompt", "Invalid request", f"the body must be a JSON object, got "
                                                                  f"{type(body).__name__}")
    if "prompt" not in body:
        raise prompt_error("no_prompt", "No prompt provided", _missing_prompt_details(body))
    prompt = body["prompt"]

    if body.get("number") is not None:
        try:
            number: int | float = finite_number(body["number"], "number")
        except BadRequest as exc:
            raise prompt_error("invalid_prompt", "Invalid number", str(exc)) from None
    else:
        number = state.queue.next_number(front=bool(body.get("front")))

    if body.get("prompt_id") is not None:
        prompt_id = _identifier(body["prompt_id"], "prompt_id")
    else:
        prompt_id = str(uuid.uuid4())

    targets = body.get("partial_execution_targets")
    if targets is not None:
        try:
            targets = string_list(targets, "partial_execution_targets")
        except BadRequest as exc:
            raise prompt_error("invalid_prompt", "Invalid partial_execution_targets", str(exc)) from None

    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        raise prompt_error("invalid_prompt", "Invalid extra_data", "extra_data must be a JSON object")
    extra_data = dict(extra_data)
    client_id = body.get("client_id") if body.get("client_id") is not None else default_client_id
    if client_id is not None:
        client_id = _identifier(client_id, "client_id")
        extra_data["client_id"] = client_id
    sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra_data}

    limit = int(state.config.max_prompt_size_mb * 1024 * 1024)
    size = await asyncio.get_running_loop().run_in_executor(None, _stored_size, prompt, extra_data)
    if size > limit:
        error = prompt_error("invalid_prompt", "Prompt too large",
                             f"the workflow and its extra_data are {size:,} bytes of JSON; the limit is {limit:,} "
                             "(--max-prompt-size)")
        error.status = 413
        raise error

    try:
        result = await asyncio.get_running_loop().run_in_executor(
            None, lambda: validate_prompt(prompt, state.registry, state.folders, targets)
        )
    except Exception as exc:  # a validator bug must not look like a server crash to the client, but is logged
        log.exception("validation of prompt %s failed", prompt_id)
        raise prompt_error("invalid_prompt", "Invalid prompt", f"validation failed: {type(exc).__name__}: {exc}")
    if not result.ok or result.workflow is None:
        body = result.response()
        if body["error"]["type"] == "missing_node_type":
            body["node_errors"] = {}  # ComfyUI's shape: a top-level error only (its extra_info names the node)
        raise BadRequest("validation failed", body=body)

    extra_data["create_time"] = now_ms()
    item = QueueItem(number, prompt_id, prompt, extra_data, list(result.workflow.outputs))
    duplicate = prompt_error(
        "invalid_prompt", "Duplicate prompt_id", f"prompt_id {prompt_id!r} is already queued or in the history"
    )
    try:
        await state.queue.enqueue(Job(item, result.workflow, secrets=sensitive))
    except DuplicatePrompt:  # queued, running, or in the history
        raise duplicate from None
    state.broadcast_status()
    return {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
