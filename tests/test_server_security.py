"""Security: Host / Origin checks, the access token, nosniff; path refusals are in test_server_http."""
from __future__ import annotations

from pathlib import Path

from aiohttp import ClientSession, CookieJar, WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer

from nodegraph.server import create_app
from nodegraph.server.config import is_loopback
from support.server import make_config


def test_loopback_detection():
    for host in ("localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "192.168.1.2", "evil.example", "localhost.evil.example", ""):
        assert not is_loopback(host), host


async def test_cross_origin_requests_are_refused(client):
    port = client.server.port
    same = await client.post("/api/prompt", json={}, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert same.status == 400  # reached the handler
    for origin in ("http://evil.example", f"http://localhost:{port}", "null", f"http://127.0.0.1:{port + 1}"):
        response = await client.post("/api/prompt", json={"prompt": {}}, headers={"Origin": origin})
        assert response.status == 403, origin
        assert "error" in await response.json()
    assert (await client.get("/api/queue", headers={"Sec-Fetch-Site": "cross-site"})).status == 403
    assert (await client.get("/api/queue", headers={"Sec-Fetch-Site": "same-origin"})).status == 200


async def test_websocket_from_another_origin_is_refused(client):
    try:
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    except WSServerHandshakeError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("the handshake should have been refused")


async def test_dns_rebinding_host_headers_are_refused(client):
    for host in ("evil.example", f"evil.example:{client.server.port}", "192.168.1.10:8188"):
        response = await client.get("/api/queue", headers={"Host": host})
        assert response.status == 403, host
    for host in (f"localhost:{client.server.port}", "127.0.0.1", "[::1]:8188"):
        assert (await client.get("/api/queue", headers={"Host": host})).status == 200, host


async def test_access_token_on_every_route_and_the_websocket(tmp_path: Path):
    config = make_config(tmp_path, auth_token="s3cret-s3cret-s3cret")
    async with TestClient(TestServer(create_app(config))) as c:
        for path in ("/api/queue", "/api/object_info", "/", "/api/view?filename=x.png", "/openapi.json"):
            response = await c.get(path)
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await c.post("/api/prompt", json={})).status == 401
        assert (await c.get("/api/queue", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await c.get("/api/queue", headers={"Authorization": "Bearer s3cret-s3cret-s3cret"})).status == 200
        try:
            await c.ws_connect("/ws")
        except WSServerHandshakeError as exc:
            assert exc.status == 401
        else:
            raise AssertionError("the websocket needs the token")
        ws = await c.ws_connect("/ws?token=s3cret-s3cret-s3cret")
        assert (await ws.receive_json())["type"] == "status"
        await ws.close()
        # A browser visit with ?token= leaves a cookie that lets the editor's own requests through.
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as browser:  # unsafe: accept IP hosts
            base = f"http://127.0.0.1:{c.server.port}"
            first = await browser.get(f"{base}/api/features?token=s3cret-s3cret-s3cret")
            assert first.status == 200
            assert "HttpOnly" in first.headers["Set-Cookie"] and "SameSite=Strict" in first.headers["Set-Cookie"]
            assert (await browser.get(f"{base}/api/queue")).status == 200


async def test_every_answer_disables_sniffing(client):
    for response in (await client.get("/api/queue"), await client.get("/nope"), await client.post("/api/prompt")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_listen_beyond_loopback_generates_and_requires_a_token(serve_process):
    import re
    import time

    from support.server import http

    server = serve_process("--listen", "0.0.0.0")
    printed = "".join(server.lines)
    while "access token required" not in printed:  # the token line follows the address line
        time.sleep(0.01)
        printed = "".join(server.lines)
    token = re.search(r"\?token=(\S+)", printed).group(1)
    url = server.url
    assert http("GET", f"{url}/api/queue")[0] == 401
    assert http("GET", f"{url}/api/queue", headers={"Authorization": f"Bearer {token}"})[0] == 200
    # Not bound to loopback: other Host names are allowed (the token protects), e.g. the machine's LAN name.
    assert http("GET", f"{url}/api/queue", headers={"Authorization": f"Bearer {token}", "Host": "box.lan:1"})[0] == 200
    server.stop()
