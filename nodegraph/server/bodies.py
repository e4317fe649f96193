"""Reading request bodies and query parameters strictly, so bad input becomes a precise 400, never a 500."""
from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

MAX_JSON_DEPTH_ERRORS = (RecursionError, MemoryError)


class BadRequest(Exception):
    """A client error; `body` is the JSON answer and `status` its HTTP status."""

    def __init__(self, message: str, status: int = 400, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else {"error": message}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str | bytes) -> Any:
    """Strict JSON: NaN / Infinity are refused, absurd nesting is a client error, not a crash."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8: {exc}") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except MAX_JSON_DEPTH_ERRORS:
        raise BadRequest("the JSON body is nested too deeply") from None


async def read_json(request: web.Request, default: Any = ...) -> Any:
    """The request's JSON body; an empty body gives `default` (or a 400 if there is none)."""
    raw = await request.read()
    if not raw.strip():
        if default is ...:
            raise BadRequest("a JSON body is required")
        return default
    return parse_json(raw)


def json_object(value: Any, what: str = "the body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


QUERY_INT_MAX = 2**53  # larger counts and offsets mean nothing here, and overflow SQLite's integers


def query_int(request: web.Request, name: str, default: int | None, minimum: int | None = None,
              maximum: int = QUERY_INT_MAX) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw[:40]!r}") from None
    if minimum is not None and value < minimum:
        raise BadRequest(f"query parameter {name!r} must be >= {minimum}, got {value}")
    if value > maximum:
        raise BadRequest(f"query parameter {name!r} must be <= {maximum}, got {value}")
    return value


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    return raw.lower() in ("1", "true", "yes", "on")


def finite_number(value: Any, what: str) -> float:
    """A JSON number (or numeric string, as ComfyUI's float() accepts) that is finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"{what} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise BadRequest(f"{what} must be a finite number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise BadRequest(f"{what} must be a finite number, got {str(value)[:40]!r}")
    return number


def string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise BadRequest(f"{what} must be a list of ids (strings)")
    return [str(v) for v in value]
