"""Fixtures and helpers for the server tests: a real server (in-process, in a thread, or a subprocess), websocket
readers, and small workflows built from the utility nodes and the test pack (server_nodes.py)."""
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
from typing import Any, AsyncIterator, Callable, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import server_nodes
from nodegraph.engine import Folders, NodeRegistry
from nodegraph.server import ServerConfig, create_app

ROOT = Path(__file__).resolve().parent.parent


def make_registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.load_builtin()
    registry.register_pack("server_nodes", nodes=server_nodes.NODES)
    return registry


def make_config(base: Path, **overrides: Any) -> ServerConfig:
    folders = Folders(models_dirs=[base / "models"], input_dir=base / "input", output_dir=base / "output",
                      temp_dir=base / "temp")
    settings: dict[str, Any] = dict(folders=folders, data_dir=base / "data", registry=make_registry())
    settings.update(overrides)
    return ServerConfig(**settings)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    """An aiohttp test client talking to a real server app on a free loopback port."""
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


# --- workflows ---------------------------------------------------------------------------------------------------


def math_workflow(a: int = 2, b: int = 3) -> dict[str, Any]:
    """Int(a) + Int(b) -> ShowText."""
    return {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": a}},
        "2": {"class_type": "PrimitiveInt", "inputs": {"value": b}},
        "3": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "op": "add", "b": ["2", 0]}},
        "4": {"class_type": "ShowText", "inputs": {"value": ["3", 0]}},
    }


def image_workflow(steps: int = 3, shade: int = 128, prefix: str = "test") -> dict[str, Any]:
    """TestPattern (progress + previews) -> SaveTestImage (a PNG in output/)."""
    return {
        "1": {"class_type": "TestPattern", "inputs": {"width": 640, "height": 480, "steps": steps, "shade": shade}},
        "2": {"class_type": "SaveTestImage", "inputs": {"image": ["1", 0], "filename_prefix": prefix}},
    }


def sleep_workflow(seconds: float, value: str = "x") -> dict[str, Any]:
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": value}},
        "2": {"class_type": "Sleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "ShowText", "inputs": {"value": ["2", 0]}},
    }


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
    """`python -m nodegraph serve --port 0 ...` with its announced URL read from stdout."""

    def __init__(self, base: Path, *extra: str):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "nodes")]),
               "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodegraph", "serve", "--port", "0", "--data-dir", str(base / "data"),
             "--input-dir", str(base / "input"), "--output-dir", str(base / "output"), *extra],
            cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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
        assert self.url, "".join(self.lines)
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
