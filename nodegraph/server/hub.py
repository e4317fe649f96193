"""Connected websocket clients and message routing (docs/compat.md §2.2), with per-client ordered outboxes.

Each client id has one record with an outbox (a deque) drained by one sender task, so a slow client never holds up
the executor or other clients, and messages to one client keep their order. Routing:

- `send(event, data, sid=None)` broadcasts to every connected client; with a sid, only that client gets it.
- A record outlives its socket for `detached_ttl` seconds: messages for it wait in the outbox (at most
  `max_backlog`, oldest dropped first) and a reconnect with the same clientId receives them. A record is also made
  when a prompt names a client id that has not connected yet, so a script may POST first and connect after.
- Previews and progress messages are dropped for a client whose outbox is backed up: they are superseded anyway.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Union

from aiohttp import web

from ..previews import Preview

log = logging.getLogger(__name__)

Outgoing = Union[str, Preview]
DROPPABLE = {"progress", "progress_state"}
# json.dumps(..., default=str) builds an encoder per call; a server sends a few messages per prompt step.
_encode = json.JSONEncoder(default=str).encode  # odd values in UI output become text


@dataclass
class Client:
    sid: str
    ws: web.WebSocketResponse | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    outbox: deque[tuple[Outgoing, bool]] = field(default_factory=deque)  # (message, droppable)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    sender: asyncio.Task[None] | None = None
    expiry: asyncio.TimerHandle | None = None

    @property
    def wants_metadata_previews(self) -> bool:
        return bool(self.flags.get("supports_preview_metadata"))


class Hub:
    def __init__(self, detached_ttl: float = 300.0, max_backlog: int = 1000, soft_limit: int = 256):
        self.clients: dict[str, Client] = {}
        self.detached_ttl = detached_ttl
        self.max_backlog = max_backlog
        self.soft_limit = soft_limit

    # --- connection lifecycle ------------------------------------------------------------------------------------

    def reserve(self, sid: str) -> None:
        """Keep messages for a client id that has not connected (yet): it may connect after queueing."""
        if sid not in self.clients:
            client = self.clients[sid] = Client(sid)
            self._expire_later(client)

    async def attach(self, sid: str, ws: web.WebSocketResponse, first: list[str], last: list[str]) -> Client:
        """Bind a socket to a client id, replacing an older socket; send `first`, the backlog, then `last`."""
        client = self.clients.get(sid)
        if client is None:
            client = self.clients[sid] = Client(sid)
        if client.expiry is not None:
            client.expiry.cancel()
            client.expiry = None
        old = client.ws
        if client.sender is not None:
            client.sender.cancel()
            client.sender = None
        client.ws = ws
        client.flags = {}
        if old is not None and not old.closed:
            await old.close(message=b"replaced by a newer connection with the same clientId")
        for text in first:
            await ws.send_str(text)
        for text in last:
            client.outbox.append((text, False))
        client.sender = asyncio.create_task(self._pump(client, ws))
        client.wakeup.set()
        return client

    def detach(self, client: Client, ws: web.WebSocketResponse) -> None:
        """The socket closed: keep the record (and its outbox) for a while, unless a newer socket took over."""
        if client.ws is not ws:
            return
        client.ws = None
        if client.sender is not None:
            client.sender.cancel()
            client.sender = None
        self._expire_later(client)

    def _expire_later(self, client: Client) -> None:
        loop = asyncio.get_running_loop()
        client.expiry = loop.call_later(self.detached_ttl, self._expire, client)

    def _expire(self, client: Client) -> None:
        if client.ws is None and self.clients.get(client.sid) is client:
            del self.clients[client.sid]

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            if client.expiry is not None:
                client.expiry.cancel()
            if client.sender is not None:
                client.sender.cancel()
            if client.ws is not None and not client.ws.closed:
                await client.ws.close(message=b"server shutting down")
        self.clients.clear()

    # --- sending -------------------------------------------------------------------------------------------------

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        text = _encode({"type": event, "data": data})
        self._route(text, event in DROPPABLE, sid)

    def send_preview(self, preview: Preview, sid: str | None = None) -> None:
        self._route(preview, True, sid)

    def _route(self, message: Outgoing, droppable: bool, sid: str | None) -> None:
        if sid is None:
            for client in self.clients.values():
                if client.ws is not None:
                    self._push(client, message, droppable)
        else:
            client = self.clients.get(sid)
            if client is not None:
                self._push(client, message, droppable)

    def _push(self, client: Client, message: Outgoing, droppable: bool) -> None:
        if droppable and len(client.outbox) >= self.soft_limit:
            return
        if len(client.outbox) >= self.max_backlog:
            client.outbox.popleft()
        client.outbox.append((message, droppable))
        client.wakeup.set()

    async def _pump(self, client: Client, ws: web.WebSocketResponse) -> None:
        """Drain the outbox in order; a message that failed to go out stays first for the next socket."""
        try:
            while not ws.closed:
                while client.outbox and not ws.closed:
                    message, droppable = client.outbox[0]
                    if isinstance(message, str):
                        await ws.send_str(message)
                    elif client.wants_metadata_previews:
                        await ws.send_bytes(message.metadata_frame())
                    else:
                        await ws.send_bytes(message.legacy_frame())
                    if client.outbox and client.outbox[0][0] is message:
                        client.outbox.popleft()
                client.wakeup.clear()
                await client.wakeup.wait()
        except (ConnectionError, RuntimeError) as exc:  # the peer went away mid-send
            log.debug("websocket %s: send failed: %s", client.sid, exc)
