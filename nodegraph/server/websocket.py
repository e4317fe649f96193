"""The `/ws?clientId=` endpoint (docs/compat.md §2), plus prompts sent over the socket.

On connect the client gets `status` with its `sid`, then whatever waited for it while it was away, then (for each of its
prompts that is running) `executing` for the current node. Messages it may send:

- `{"type": "feature_flags", "data": {...}}` -> the server's `feature_flags` reply.
- `{"type": "prompt", "data": <POST /prompt body>, "request_id": any?}` -> `prompt_queued` with
  `{prompt_id, number, node_errors}` or `prompt_error` with the body POST /prompt would answer with 400; both echo
  `request_id` when given. The prompt's client_id defaults to this socket's sid, so its execution messages follow.
- Anything that is not a JSON object gets an `error` message; unknown types are ignored, as ComfyUI does.
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from ..engine.errors import request_error
from .bodies import BadRequest, parse_json
from .hub import Client
from .prompts import MAX_ID_LENGTH, submit
from .state import STATE, ServerState

log = logging.getLogger(__name__)


def _client_id(raw: str | None) -> str:
    if raw and len(raw) <= MAX_ID_LENGTH and raw.isprintable():
        return raw
    return uuid.uuid4().hex


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=state.config.max_upload_bytes)
    await ws.prepare(request)
    sid = _client_id(request.query.get("clientId"))
    status = {"type": "status", "data": {"status": state.queue_status(), "sid": sid}}
    resume = []
    for job in state.queue.running():
        node = job.node
        if job.client == sid and node is not None:
            resume.append(json.dumps(
                {"type": "executing", "data": {"node": node, "display_node": node, "prompt_id": job.prompt_id}}
            ))
    client = await state.hub.attach(sid, ws, [json.dumps(status)], resume)
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await _on_text(state, client, message.data)
    finally:
        state.hub.detach(client, ws)
    return ws


async def _on_text(state: ServerState, client: Client, text: str) -> None:
    try:
        message = parse_json(text)
    except BadRequest as exc:
        state.hub.send("error", {"message": str(exc)}, client.sid)
        return
    if not isinstance(message, dict):
        state.hub.send("error", {"message": "a message must be a JSON object {type, data}"}, client.sid)
        return
    kind, data = message.get("type"), message.get("data")
    if kind == "feature_flags":
        client.flags = data if isinstance(data, dict) else {}
        state.hub.send("feature_flags", state.feature_flags(), client.sid)
    elif kind == "prompt":
        echo: dict[str, Any] = {"request_id": message["request_id"]} if "request_id" in message else {}
        try:
            queued = await submit(state, data, default_client_id=client.sid)
        except BadRequest as exc:
            state.hub.send("prompt_error", {**exc.body, **echo}, client.sid)
            return
        except Exception as exc:  # e.g. the database failed: tell this client, keep the socket
            log.exception("websocket %s: queueing a prompt failed", client.sid)
            error = request_error("server_error", "Could not queue the prompt", str(exc))
            state.hub.send("prompt_error", {**error, **echo}, client.sid)
            return
        state.hub.send("prompt_queued", {**queued, **echo}, client.sid)
    else:
        log.debug("websocket %s: ignored message type %r", client.sid, kind)
