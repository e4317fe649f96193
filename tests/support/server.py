"""The real server for tests: in-process (the `client` fixture), in a thread (`ServerThread`) or as `nodegraph serve`
in a subprocess (`ServeProcess`, the `serve_process` fixture); HTTP and websocket helpers.

A plugin: aiohttp and the server package are imported inside the functions, so a test file that starts no server
does not pay for them.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator

import pytest

from nodegraph.engine import Folders

from . import ROOT
from .registry import make_registry

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.test_utils import TestClient

    from nodegraph.server import ServerConfig


def make_config(base: Path, **overrides: Any) -> ServerConfig:
    """The server's config on folders under `base`, with make_registry()'s nodes; `overrides` replace fields."""
    from nodegraph.server import ServerConfig

    folders = Folders(models_dirs=[base / "models"], input_dir=base / "input", output_dir=base / "output",
                      temp_dir=base / "temp")
    settings: dict[str, Any] = dict(folders=folders, data_dir=base / "data", registry=make_registry())
    settings.update(overrides)
    return ServerConfig(**settings)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    """An aiohttp test client talking to a real server app on a free loopback port."""
    from aiohttp.test_utils import TestClient, TestServer

    from nodegraph.server import create_app

    async with TestClient(TestServer(create_app(make_config(tmp_path)))) as test_client:
        yield test_client


# --- websocket helpers -------------------------------------------------------------------------------------------


async def open_ws(client: TestClient, client_id: str | None = None, metadata_previews: bool = True,
                  **params: str) -> tuple[Any, str]:
    """Connect like the ComfyUI editor: read `status` (the sid), send feature_flags, read the reply."""
    query = dict(params)
    if client_id is not None:
        query["clientId"] = client_id
    ws = await client.ws_connect("/ws", params=query)
    status = await ws.receive_json()
    assert status["type"] == "status"
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": metadata_previews}})
    reply = await ws.receive_json()
    assert reply["type"] == "feature_flags"
    return ws, status["data"]["sid"]


async def messages_until(ws: Any, done: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """Messages (dicts; binary frames as bytes) up to and including the first JSON one `done` accepts."""
    from aiohttp import web

    seen: list[Any] = []
    while True:
        msg = await ws.receive()
        if msg.type == web.WSMsgType.BINARY:
            seen.append(msg.data)
            continue
        assert msg.type == web.WSMsgType.TEXT, f"websocket closed: {msg}"
        data = json.loads(msg.data)
        seen.append(data)
        if done(data):
            return seen


def finished(prompt_id: str) -> Callable[[dict[str, Any]], bool]:
    """The final `executing {node: null}` of a prompt."""
    return lambda m: m["type"] == "executing" and m["data"]["node"] is None and m["data"]["prompt_id"] == prompt_id


def types(messages: list[Any], prompt_id: str | None = None) -> list[str]:
    """Message types in order (binary frames as 'binary'), optionally only those of one prompt."""
    out = []
    for m in messages:
        if isinstance(m, bytes):
            out.append("binary")
        elif prompt_id is None or m["data"].get("prompt_id") == prompt_id:
            out.append(m["type"])
    return out


# --- a server in a thread, for synchronous clients (websocket-client, urllib, hypothesis) --------------------------


class ServerThread:
    """The real app on its own event loop in a background thread; `url` is its base address."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
        self._loop.close()

    async def _start(self) -> None:
        from aiohttp import web

        from nodegraph.server import create_app

        self._runner = web.AppRunner(create_app(self.config), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body bytes, headers) with urllib, not raising on 4xx / 5xx."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


# --- `nodegraph serve` as a subprocess ---------------------------------------------------------------------------


class ServeProcess:
    """`python -m nodegraph serve` on `port` (0: any free one) with `base`'s data, input and output folders and
    `extra` arguments; `url` is the address it announced. `env` adds environment variables; `preexec_fn` runs in
    the child (resource limits). Its output is kept in `lines`, read on by a thread so the child never blocks."""

    def __init__(self, base: Path, *extra: str, port: int = 0, env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "nodes")]),
               "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodegraph", "serve", "--port", str(port), "--data-dir", str(base / "data"),
             "--input-dir", str(base / "input"), "--output-dir", str(base / "output"), *extra],
            cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self.url = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        assert self.url, "nodegraph serve did not start:\n" + "".join(self.lines)
        # Keep draining the output so the child never blocks on a full pipe.
        self._drain = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._drain.start()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*extra: str) -> ServeProcess:
        process = ServeProcess(tmp_path, *extra)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()
