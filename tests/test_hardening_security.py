"""Hardening of access (issue 17, items 1, 12, 13): tokens that can be guessed are refused, a server beyond
loopback never runs open, tokens come from a file or the environment and are masked in /system_stats, and the
Origin rules hold whatever the Host (with `--allow-origin` for deliberate cross-origin clients)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodegraph.server import create_app
from nodegraph.server.config import MIN_TOKEN_LENGTH, token_problem
from nodegraph.server.routes_system import masked_argv
from support import ROOT
from support.server import http, make_config

TOKEN = "t0ken-for-tests-0123456789"


def test_short_empty_or_blank_tokens_are_refused():
    for bad in ("", "a", " ", " " * 20, "x" * (MIN_TOKEN_LENGTH - 1), "abc def ghi jkl mno", "tab\there-0123456789"):
        assert token_problem(bad) is not None, repr(bad)
    assert "at least 16 characters" in token_problem("a")
    assert token_problem("x" * MIN_TOKEN_LENGTH) is None and token_problem(None) is None


def test_a_server_beyond_loopback_never_runs_open(tmp_path: Path):
    with pytest.raises(ValueError, match="without an access token"):
        create_app(make_config(tmp_path, host="0.0.0.0"))
    with pytest.raises(ValueError, match="at least 16"):
        create_app(make_config(tmp_path, host="0.0.0.0", auth_token="a"))
    create_app(make_config(tmp_path, host="0.0.0.0", auth_token=TOKEN))  # fine


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k != "NODEGRAPH_AUTH_TOKEN"}
    environment = {**inherited, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'nodes'}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nodegraph", "serve", "--port", "0", "--data-dir",
                           str(tmp_path / "data"), *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=environment)


def test_cli_refuses_empty_and_short_tokens(tmp_path: Path):
    for token in ("", "a", " "):
        done = _serve(tmp_path, "--listen", "0.0.0.0", "--auth-token", token)
        assert done.returncode == 2, done.stderr
        assert "access token" in done.stderr and "listening" not in done.stdout
    (tmp_path / "tok").write_text("short\n")
    done = _serve(tmp_path, "--auth-token-file", str(tmp_path / "tok"))
    assert done.returncode == 2 and "at least 16" in done.stderr
    done = _serve(tmp_path, "--auth-token", TOKEN, env={"NODEGRAPH_AUTH_TOKEN": TOKEN})
    assert done.returncode == 2 and "once" in done.stderr


def test_masked_argv():
    assert masked_argv(["nodegraph", "serve", "--auth-token", "abc", "--port", "1"]) == [
        "nodegraph", "serve", "--auth-token", "***", "--port", "1"]
    assert masked_argv(["x", "--auth-token=abc"]) == ["x", "--auth-token=***"]


def _stats(url: str, token: str) -> dict:
    status, body, _ = http("GET", f"{url}/api/system_stats", headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    return json.loads(body)


def test_token_from_the_environment_or_a_file_and_masked_in_system_stats(serve_process, monkeypatch, tmp_path):
    monkeypatch.setenv("NODEGRAPH_AUTH_TOKEN", TOKEN)
    server = serve_process("--listen", "127.0.0.1")
    assert http("GET", f"{server.url}/api/queue")[0] == 401
    assert TOKEN not in json.dumps(_stats(server.url, TOKEN))
    assert TOKEN not in "".join(server.lines)  # a token the user gave is never printed
    server.stop()
    monkeypatch.delenv("NODEGRAPH_AUTH_TOKEN")
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    server = serve_process("--auth-token-file", str(tmp_path / "token.txt"))
    assert http("GET", f"{server.url}/api/queue")[0] == 401
    assert http("GET", f"{server.url}/api/queue", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    server.stop()
    other = TOKEN[::-1]
    server = serve_process("--auth-token", other)
    stats = _stats(server.url, other)
    assert other not in json.dumps(stats)
    assert stats["system"]["argv"][stats["system"]["argv"].index("--auth-token") + 1] == "***"
    server.stop()


async def test_origin_rules_hold_beyond_loopback_with_a_token(tmp_path: Path):
    config = make_config(tmp_path, host="0.0.0.0", auth_token=TOKEN, allowed_origins=["https://app.example"])
    async with TestClient(TestServer(create_app(config))) as c:
        auth = {"Authorization": f"Bearer {TOKEN}", "Host": "box.lan:8188"}
        assert (await c.get("/api/queue", headers=auth)).status == 200
        assert (await c.get("/api/queue", headers={**auth, "Origin": "http://box.lan:8188"})).status == 200
        # A page on the same host at another port is same-site: it gets the cookie, but not the server.
        for origin in ("http://box.lan:9999", "http://evil.example", "null"):
            response = await c.post("/api/prompt", json={}, headers={**auth, "Origin": origin})
            assert response.status == 403, origin
            assert "--allow-origin" in (await response.json())["error"] or origin == "null"
        assert (await c.get("/api/queue", headers={**auth, "Sec-Fetch-Site": "cross-site"})).status == 403
        assert (await c.get("/api/queue", headers={**auth, "Sec-Fetch-Site": "same-site",
                                                   "Sec-Fetch-Mode": "cors"})).status == 403
        # The deliberately allowed origin passes, with CORS headers, and its preflight is answered.
        allowed = {**auth, "Origin": "https://app.example"}
        response = await c.get("/api/queue", headers={**allowed, "Sec-Fetch-Site": "cross-site"})
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        preflight = await c.options("/api/prompt", headers={"Host": "box.lan:8188", "Origin": "https://app.example",
                                                             "Access-Control-Request-Method": "POST"})
        assert preflight.status == 204 and "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        # The allowed origin still needs the token.
        assert (await c.get("/api/queue", headers={"Host": "box.lan:8188", "Origin": "https://app.example"})).status \
            == 401
