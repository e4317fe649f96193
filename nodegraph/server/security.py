"""Request guards: Host / Origin checks (CSRF, DNS rebinding), the access token, safe headers, JSON errors.

- Bound to loopback, the Host header must name a loopback address or the bound name; anything else is a DNS
  rebinding attempt (a page on evil.example resolving its name to 127.0.0.1) and gets 403.
- Whatever the Host, a request carrying an `Origin` whose host:port differs (or `Origin: null`), or marked
  `Sec-Fetch-Site: cross-site`, gets 403: another website's page may not drive the server (ComfyUI #4850, #13245),
  not even one on the same host at another port, which the browser treats as same-site (so it would send the
  token cookie). Origins listed with `--allow-origin` pass.
- With an access token (always, when listening beyond loopback), every route and the websocket need it:
  `Authorization: Bearer <token>`, or `?token=<token>` (websocket / browser), after which the browser holds it in an
  HttpOnly, SameSite=Strict cookie so the editor's own requests pass.
- Every answer carries `X-Content-Type-Options: nosniff`; every error is JSON, never an HTML page.
"""
from __future__ import annotations

import errno
import hmac
import logging
import os
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from .bodies import BadRequest
from .config import is_loopback, normal_origin
from .state import STATE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_COOKIE = "nodegraph_token"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_and_port(value: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"{scheme}://{value}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def _forbidden(message: str) -> web.Response:
    return web.json_response({"error": message}, status=403)


def _given_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[STATE].config
    scheme = request.scheme
    host, port = _host_and_port(request.host, scheme)
    if config.loopback_only and not (is_loopback(host) or host == config.host.lower()):
        return _forbidden(f"Host {request.host!r} refused: this server answers only to its loopback name "
                          "(DNS rebinding protection)")
    # The same Origin rules whatever the Host: with a token too, since a page on the same host (another port) is
    # same-site, so the browser sends it the SameSite cookie. Deliberate cross-origin clients are listed with
    # --allow-origin.
    origin = request.headers.get("Origin")
    allowed = origin is not None and normal_origin(origin) in config.allowed_origin_set
    if origin is not None and not allowed:
        parts = urlsplit(origin)
        origin_host, origin_port = _host_and_port(parts.netloc, parts.scheme or scheme)
        if origin.strip().lower() == "null" or (origin_host, origin_port) != (host, port):
            return _forbidden(f"cross-origin request from {origin[:200]!r} refused (allow it with --allow-origin)")
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if not allowed and fetch_site == "cross-site":
        return _forbidden("cross-site request refused")
    if not allowed and fetch_site == "same-site" and request.headers.get("Sec-Fetch-Mode", "").lower() != "navigate":
        # another port or subdomain of this host: the browser counts it as the same site and sends the cookie
        return _forbidden("request from another origin of this site refused (allow it with --allow-origin)")
    if allowed and request.method == "OPTIONS":  # a CORS preflight of an allowed origin (carries no token)
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin or "",
            "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        })
    response = await _authorized(request, handler, config)
    if allowed and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin or ""
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


async def _authorized(request: web.Request, handler: Handler, config: Any) -> web.StreamResponse:
    if config.auth_token:
        given = _given_token(request)
        if given is None or not hmac.compare_digest(given.encode(), config.auth_token.encode()):
            return web.json_response(
                {"error": "authentication required: send 'Authorization: Bearer <token>' or '?token=<token>'"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        response = await handler(request)
        if request.query.get("token") and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, config.auth_token, httponly=True, samesite="Strict", path="/")
        return response
    return await handler(request)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Client errors as `{"error": message}` (or the route's own JSON body); a bug as a logged JSON 500."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return web.json_response(exc.body, status=exc.status)
    except OSError as exc:
        answer = _filesystem_error(exc)
        if answer is None:
            log.exception("%s %s failed", request.method, request.path)
            return web.json_response({"error": "internal server error (see the server log)"}, status=500)
        return answer
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return web.json_response({"error": message}, status=exc.status, headers=headers)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal server error (see the server log)"}, status=500)


# File system refusals caused by the names a client chose: the client's error, with the reason.
FILESYSTEM_ERRORS = {
    errno.ENAMETOOLONG: (400, "a file or folder name is too long"),
    errno.EEXIST: (409, "a file is in the way of a folder (or a folder of a file) with that name"),
    errno.ENOTDIR: (409, "a part of the path is a file, not a folder"),
    errno.EISDIR: (409, "that name is a folder, not a file"),
    errno.ENOTEMPTY: (409, "the folder is not empty"),
    errno.ELOOP: (400, "too many levels of symbolic links"),
    errno.EINVAL: (400, "the file system refuses that name"),
    errno.EILSEQ: (400, "the file system refuses the characters of that name"),
}


def _filesystem_error(exc: OSError) -> web.Response | None:
    known = FILESYSTEM_ERRORS.get(exc.errno or 0)
    if known is None:
        return None
    status, reason = known
    name = os.path.basename(str(exc.filename or ""))[:80]
    return web.json_response({"error": f"{reason}" + (f": {name!r}" if name else "")}, status=status)


async def safe_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: no MIME sniffing anywhere; the editor's code is always revalidated."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path == "/" or request.path.endswith((".js", ".css", ".html")):
        response.headers.setdefault("Cache-Control", "no-cache")
