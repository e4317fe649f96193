"""Prompts, the queue, interrupt, history, jobs and /free (docs/compat.md §1.2-1.4)."""
from __future__ import annotations

import logging

from aiohttp import web

from ..engine.errors import request_error
from .bodies import BadRequest, json_object, query_int, read_json, string_list
from .prompts import submit
from .state import STATE
from .store import JOB_STATUSES

log = logging.getLogger(__name__)


async def post_prompt(request: web.Request) -> web.Response:
    state = request.app[STATE]
    limit = int(state.config.max_prompt_size_mb * 1024 * 1024)
    size = len(await request.read())
    if size > 2 * limit + 65536:  # far over the stored-size limit: refused before parsing (parsing blocks the loop)
        details = f"the request body is {size:,} bytes; the workflow limit is {limit:,} (--max-prompt-size)"
        raise BadRequest(details, status=413, body=request_error("invalid_prompt", "Prompt too large", details))
    try:
        body = await read_json(request)
    except BadRequest as exc:
        raise BadRequest(str(exc), body=request_error("invalid_prompt", "Invalid request", str(exc))) from None
    return web.json_response(await submit(state, body))


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response({"exec_info": request.app[STATE].queue_status()["exec_info"]})


async def get_queue(request: web.Request) -> web.Response:
    queue = request.app[STATE].queue
    running = [job.item.wire() for job in queue.running()]
    return web.json_response({"queue_running": running, "queue_pending": [i.wire() for i in queue.pending()]})


async def post_queue(request: web.Request) -> web.Response:
    """`{"clear": true}` drops every pending prompt; `{"delete": [ids]}` drops those (the running one is untouched)."""
    state = request.app[STATE]
    body = json_object(await read_json(request, {}))
    removed: list[str] = []
    if body.get("clear"):
        removed += await state.queue.clear()
    if "delete" in body:
        removed += await state.queue.remove(string_list(body["delete"], "delete"))
    if removed:
        state.broadcast_status()
    return web.Response(status=200)


async def post_interrupt(request: web.Request) -> web.Response:
    """Interrupt the running prompt(s); with `{"prompt_id": id}` only that prompt, if it is running."""
    body = json_object(await read_json(request, {}))
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise BadRequest("prompt_id must be a string")
    request.app[STATE].worker.interrupt(prompt_id)
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    body = json_object(await read_json(request, {}))
    request.app[STATE].worker.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
    return web.Response(status=200)


async def get_history(request: web.Request) -> web.StreamResponse:
    """ComfyUI's paging (oldest first; `max_items` alone takes the newest). Without `max_items` the answer is one
    page of `history_page` entries (the newest, or from `offset`), not the whole history; a client that wants
    everything asks for it with a large `max_items`. Either way the answer is streamed a few entries at a time."""
    state = request.app[STATE]
    max_items = query_int(request, "max_items", None, minimum=0)
    offset = query_int(request, "offset", -1, minimum=-1)
    assert offset is not None
    if max_items is None:
        max_items = state.config.history_page
    start, count = await state.store.history_span(max_items, offset)
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await response.prepare(request)
    try:
        await response.write(b"{")
        first = True
        async for pieces in state.store.history_json_batches(start, count):
            text = ", ".join(pieces)
            await response.write((text if first else ", " + text).encode())
            first = False
        await response.write(b"}")
        await response.write_eof()
    except ConnectionError:  # the client went away mid-answer: nothing to tell it
        pass
    except Exception:  # the status line is sent: a JSON error cannot follow, so end the connection instead
        log.exception("GET /history failed while streaming")
        if request.transport is not None:
            request.transport.close()
    return response


async def get_history_entry(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = await request.app[STATE].store.history_entry(prompt_id)
    return web.json_response({prompt_id: entry} if entry is not None else {})


async def post_history(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    body = json_object(await read_json(request, {}))
    if body.get("clear"):
        await store.clear_history()
    if "delete" in body:
        await store.delete_history(string_list(body["delete"], "delete"))
    return web.Response(status=200)


def _jobs_error(message: str) -> BadRequest:
    return BadRequest(message, body={"error": message})


async def get_jobs(request: web.Request) -> web.Response:
    """GET /api/jobs: filter by status and workflow_id, sort by created_at or execution_duration, page."""
    raw_status = request.query.get("status")
    statuses = set(JOB_STATUSES)
    if raw_status:
        statuses = {s.strip() for s in raw_status.split(",") if s.strip()}
        unknown = sorted(statuses - set(JOB_STATUSES))
        if unknown:
            raise _jobs_error(f"invalid status {', '.join(unknown)}; expected any of {', '.join(JOB_STATUSES)}")
    sort_by = request.query.get("sort_by", "created_at")
    if sort_by not in ("created_at", "execution_duration"):
        raise _jobs_error("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = request.query.get("sort_order", "desc")
    if sort_order not in ("asc", "desc"):
        raise _jobs_error("sort_order must be 'asc' or 'desc'")
    try:
        limit = query_int(request, "limit", None, minimum=1)
        offset = query_int(request, "offset", 0, minimum=0) or 0
    except BadRequest as exc:
        raise _jobs_error(str(exc)) from None
    jobs, total = await request.app[STATE].store.jobs(
        statuses, request.query.get("workflow_id"), sort_by, sort_order == "desc", limit, offset
    )
    shown_limit = limit if limit is not None else max(total - offset, 0)
    return web.json_response({
        "jobs": jobs,
        "pagination": {"offset": offset, "limit": shown_limit, "total": total, "has_more": offset + len(jobs) < total},
    })


async def get_job(request: web.Request) -> web.Response:
    job = await request.app[STATE].store.job(request.match_info["job_id"])
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


async def _cancel(request: web.Request, job_id: str) -> str:
    """'cancelled' (was pending), 'interrupted' (was running), 'finished' or 'not_found'."""
    state = request.app[STATE]
    if await state.queue.remove([job_id]):
        state.broadcast_status()
        return "cancelled"
    if state.worker.interrupt(job_id):
        return "interrupted"
    return "finished" if await state.store.job(job_id) is not None else "not_found"


async def post_cancel_job(request: web.Request) -> web.Response:
    """Cancel one job: a pending one leaves the queue, a running one is interrupted."""
    job_id = request.match_info["job_id"]
    outcome = await _cancel(request, job_id)
    if outcome == "not_found":
        return web.json_response({"error": "Job not found"}, status=404)
    if outcome == "finished":
        return web.json_response({"error": "Job already finished"}, status=409)
    return web.json_response({"id": job_id, "result": outcome})


async def post_cancel_jobs(request: web.Request) -> web.Response:
    """Cancel several: `{"job_ids": [...]}` -> `{"cancelled": [...], "interrupted": [...], "not_cancelled": [...]}`."""
    body = json_object(await read_json(request))
    if "job_ids" not in body:
        raise _jobs_error("job_ids is required: a list of job ids")
    result: dict[str, list[str]] = {"cancelled": [], "interrupted": [], "not_cancelled": []}
    for job_id in string_list(body["job_ids"], "job_ids"):
        outcome = await _cancel(request, job_id)
        result[outcome if outcome in ("cancelled", "interrupted") else "not_cancelled"].append(job_id)
    return web.json_response(result)


ROUTES = [
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("POST", "/free", post_free),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_entry),
    ("POST", "/history", post_history),
    ("GET", "/jobs", get_jobs),
    ("GET", "/jobs/{job_id}", get_job),
    ("POST", "/jobs/{job_id}/cancel", post_cancel_job),
    ("POST", "/jobs/cancel", post_cancel_jobs),
]
