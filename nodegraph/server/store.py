"""The durable queue and history: one SQLite database (WAL) under the data dir, one writer thread.

Every prompt is one row whose `state` moves pending -> running -> done. A POST is answered only after its row is
committed, so an accepted prompt survives a crash. At start-up, pending rows are queued again and a row still marked
running (the process died under it) is written to the history as failed ("server stopped while running"), never
re-run: a prompt that crashed the process would otherwise crash it again at every start.

Several prompts may run at once (the Ray executor runs one per worker), so `running_items` holds them all; the
local executor runs one at a time. The queue (pending + running) is also kept in memory, so queue reads and `status` messages never touch the disk;
the history is read from the database, paged. All database work runs on one dedicated thread: it is the single
writer, and reads queued behind a write see it.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from ..engine.errors import execution_error, now_ms
from ..jobs import DuplicatePrompt, QueueItem

T = TypeVar("T")

SERVER_STOPPED = "server stopped while running"
JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id     TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,          -- submission order, the tie-break between equal numbers
    number        REAL NOT NULL,             -- queue priority: lower runs first (front=true is negative)
    number_json   TEXT NOT NULL,             -- the number as the client sees it (int or float)
    state         TEXT NOT NULL,             -- pending | running | done
    prompt        TEXT NOT NULL,
    extra_data    TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    create_time   INTEGER NOT NULL,
    workflow_id   TEXT,
    start_time    INTEGER,
    end_time      INTEGER,
    done_seq      INTEGER,                   -- history order
    status_str    TEXT,
    job_status    TEXT,
    outputs       TEXT,
    messages      TEXT,
    meta          TEXT,
    timings       TEXT,
    outputs_count INTEGER,
    preview       TEXT,
    error         TEXT
);
CREATE INDEX IF NOT EXISTS prompts_state ON prompts(state, done_seq);
"""


@dataclass
class Finished:
    """What the worker records when a prompt ends."""

    status_str: str  # success | error
    job_status: str  # completed | failed | cancelled
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[Any] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    end_time: int | None = None


def to_json(value: Any) -> str:
    """JSON for the database; a value a node left in its UI output that JSON cannot hold becomes its text, so a
    prompt's record is never lost to one odd value."""
    return json.dumps(value, default=str)


def history_meta(outputs: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's per-output-node `meta` (no subgraph expansion here, so every id maps to itself)."""
    return {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid} for nid in outputs}


MEDIA_KEYS = ("images", "gifs", "video", "audio", "animated", "3d")


def summarize_outputs(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """(number of media items, the job's preview item): the first saved file, else the first temp one."""
    count = 0
    preview: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    for nid, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for key, items in ui.items():
            if key not in MEDIA_KEYS or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                count += 1
                shown = {**item, "nodeId": nid, "mediaType": key}
                if preview is None and item.get("type", "output") == "output":
                    preview = shown
                elif fallback is None:
                    fallback = shown
    return count, preview or fallback


class Store:
    """The queue (in memory + SQLite) and the history (SQLite). Create, then `await open()` before use."""

    def __init__(self, path: Path, max_history: int = 10000):
        self.path = Path(path)
        self.max_history = max_history
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodegraph-db")
        self._db: sqlite3.Connection | None = None
        self.pending: dict[str, QueueItem] = {}
        self.running_items: dict[str, QueueItem] = {}  # prompt id -> item, in start order
        self._inserting: set[str] = set()
        self._seq = 0
        self._counter = 0
        self.recovered: list[str] = []  # prompt ids found running at start-up and recorded as failed

    # --- plumbing ------------------------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "Store.open() was not awaited"
        return self._db

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a crash of this process (not necessarily a power cut), at no fsync per prompt.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM prompts").fetchone()[0]
        top = self.db.execute("SELECT COALESCE(MAX(ABS(number)), -1) FROM prompts").fetchone()[0]
        self._counter = int(top) + 1
        stale = self.db.execute("SELECT prompt_id, start_time FROM prompts WHERE state='running'").fetchall()
        for prompt_id, start_time in stale:
            self._record_server_stopped(prompt_id, start_time)
            self.recovered.append(prompt_id)
        rows = self.db.execute(
            "SELECT number_json, prompt_id, prompt, extra_data, outputs_to_execute, seq FROM prompts "
            "WHERE state='pending' ORDER BY number, seq"
        ).fetchall()
        for number, pid, prompt, extra, outs, seq in rows:
            self.pending[pid] = QueueItem(json.loads(number), pid, json.loads(prompt), json.loads(extra),
                                          json.loads(outs), seq)

    async def record_stopped(self, item: QueueItem, node_id: str | None = None, node_type: str | None = None) -> None:
        """Record a prompt that was running when the server stopped as failed ("server stopped while running")."""
        try:
            await self._call(self._record_server_stopped, item.prompt_id, item.start_time, node_id, node_type)
        finally:
            if self.running_items.get(item.prompt_id) is item:
                del self.running_items[item.prompt_id]

    def _record_server_stopped(self, prompt_id: str, start_time: int | None, node_id: str | None = None,
                               node_type: str | None = None) -> None:
        stamp = now_ms()
        error = execution_error(SERVER_STOPPED, "ServerStopped", node_id=node_id, node_type=node_type,
                                prompt_id=prompt_id, timestamp=stamp)
        messages = []
        if start_time is not None:
            messages.append(["execution_start", {"prompt_id": prompt_id, "timestamp": start_time}])
        messages.append(["execution_error", error])
        self._finish(prompt_id, Finished("error", "failed", messages=messages, error=error, end_time=stamp))

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(_close)
        self._pool.shutdown(wait=True)

    # --- queue ---------------------------------------------------------------------------------------------------

    def next_number(self, front: bool) -> int:
        """ComfyUI's counter: increasing, negated for `front` so it sorts before everything queued normally."""
        number = self._counter
        self._counter += 1
        return -number if front else number

    def contains(self, prompt_id: str) -> bool:
        """Whether the id is queued, being queued, or running."""
        return (
            prompt_id in self.pending
            or prompt_id in self._inserting
            or prompt_id in self.running_items
        )

    async def add(self, item: QueueItem) -> None:
        """Commit, then queue; DuplicatePrompt if the id is taken (by the queue or the history)."""
        if self.contains(item.prompt_id):
            raise DuplicatePrompt(item.prompt_id)
        self._seq += 1
        item.seq = self._seq
        self._inserting.add(item.prompt_id)
        try:
            await self._call(self._insert, item)
        except sqlite3.IntegrityError:
            raise DuplicatePrompt(item.prompt_id) from None
        finally:
            self._inserting.discard(item.prompt_id)
        self.pending[item.prompt_id] = item

    def _insert(self, item: QueueItem) -> None:
        self.db.execute(
            "INSERT INTO prompts (prompt_id, seq, number, number_json, state, prompt, extra_data, outputs_to_execute, "
            "create_time, workflow_id) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
            (item.prompt_id, item.seq, float(item.number), to_json(item.number), to_json(item.prompt),
             to_json(item.extra_data), to_json(item.outputs_to_execute), item.create_time, item.workflow_id),
        )

    def queue_remaining(self) -> int:
        return len(self.pending) + len(self.running_items)

    def pending_sorted(self) -> list[QueueItem]:
        return sorted(self.pending.values(), key=QueueItem.sort_key)

    async def mark_running(self, item: QueueItem) -> None:
        """Move a pending prompt to running (committed before it runs, so a crash is detected)."""
        del self.pending[item.prompt_id]
        item.start_time = now_ms()
        self.running_items[item.prompt_id] = item
        await self._call(
            lambda: self.db.execute(
                "UPDATE prompts SET state='running', start_time=? WHERE prompt_id=?", (item.start_time, item.prompt_id)
            )
        )

    async def delete_pending(self, prompt_ids: Iterable[str]) -> list[str]:
        removed = [pid for pid in prompt_ids if isinstance(pid, str) and self.pending.pop(pid, None) is not None]
        if removed:
            await self._call(
                lambda: self.db.executemany(
                    "DELETE FROM prompts WHERE prompt_id=? AND state='pending'", [(pid,) for pid in removed]
                )
            )
        return removed

    async def clear_pending(self) -> list[str]:
        return await self.delete_pending(list(self.pending))

    async def finish(self, item: QueueItem, done: Finished) -> None:
        """Record a running prompt in the history and free its running slot."""
        try:
            await self._call(self._finish, item.prompt_id, done)
        finally:
            if self.running_items.get(item.prompt_id) is item:
                del self.running_items[item.prompt_id]

    def _finish(self, prompt_id: str, done: Finished) -> None:
        count, preview = summarize_outputs(done.outputs)
        with self.db:
            self.db.execute("BEGIN")
            done_seq = self.db.execute("SELECT COALESCE(MAX(done_seq), 0) + 1 FROM prompts").fetchone()[0]
            self.db.execute(
                "UPDATE prompts SET state='done', done_seq=?, end_time=?, status_str=?, job_status=?, outputs=?, "
                "messages=?, meta=?, timings=?, outputs_count=?, preview=?, error=? WHERE prompt_id=?",
                (done_seq, done.end_time or now_ms(), done.status_str, done.job_status, to_json(done.outputs),
                 to_json(done.messages), to_json(history_meta(done.outputs)), to_json(done.timings), count,
                 to_json(preview), to_json(done.error), prompt_id),
            )
            excess = self.db.execute("SELECT COUNT(*) FROM prompts WHERE state='done'").fetchone()[0] - self.max_history
            if excess > 0:
                self.db.execute(
                    "DELETE FROM prompts WHERE prompt_id IN (SELECT prompt_id FROM prompts WHERE state='done' "
                    "ORDER BY done_seq LIMIT ?)",
                    (excess,),
                )

    # --- history -------------------------------------------------------------------------------------------------

    _HISTORY_COLUMNS = (
        "number_json, prompt_id, prompt, extra_data, outputs_to_execute, outputs, status_str, messages, meta, timings"
    )

    @staticmethod
    def _history_entry(row: tuple[Any, ...]) -> dict[str, Any]:
        number, pid, prompt, extra, outs, outputs, status_str, messages, meta, timings = row
        return {
            "prompt": [json.loads(number), pid, json.loads(prompt), json.loads(extra), json.loads(outs)],
            "outputs": json.loads(outputs or "{}"),
            "status": {
                "status_str": status_str,
                "completed": status_str == "success",
                "messages": json.loads(messages or "[]"),
            },
            "meta": json.loads(meta or "{}"),
            "timings": json.loads(timings or "{}"),
        }

    async def history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """ComfyUI's paging: oldest first; without an offset, `max_items` takes the newest ones."""

        def query() -> dict[str, Any]:
            if offset < 0 and max_items is not None:
                total = self.db.execute("SELECT COUNT(*) FROM prompts WHERE state='done'").fetchone()[0]
                start = max(0, total - max_items)
            else:
                start = max(0, offset)
            rows = self.db.execute(
                f"SELECT {self._HISTORY_COLUMNS} FROM prompts WHERE state='done' ORDER BY done_seq LIMIT ? OFFSET ?",
                (-1 if max_items is None else max_items, start),
            ).fetchall()
            return {row[1]: self._history_entry(row) for row in rows}

        return await self._call(query)

    async def history_span(self, max_items: int | None, offset: int) -> tuple[int, int]:
        """(first row, row count) of a history page, with `history`'s paging rules (count -1: to the end)."""

        def query() -> tuple[int, int]:
            if offset < 0 and max_items is not None:
                total = self.db.execute("SELECT COUNT(*) FROM prompts WHERE state='done'").fetchone()[0]
                return max(0, total - max_items), max_items
            return max(0, offset), -1 if max_items is None else max_items

        return await self._call(query)

    async def history_json_batches(self, start: int, count: int, batch: int = 32) -> Any:
        """The history page as JSON text, a few entries at a time (`"id": {...}` pieces, comma-separated), so a
        large history is streamed with bounded memory. Stored JSON columns are copied, never parsed."""
        done = 0
        while count < 0 or done < count:
            limit = batch if count < 0 else min(batch, count - done)
            rows = await self._call(lambda: self.db.execute(
                f"SELECT {self._HISTORY_COLUMNS} FROM prompts WHERE state='done' ORDER BY done_seq LIMIT ? OFFSET ?",
                (limit, start + done),
            ).fetchall())
            if not rows:
                return
            yield [f"{json.dumps(row[1])}: {self._history_entry_json(row)}" for row in rows]
            done += len(rows)
            if len(rows) < limit:
                return

    @staticmethod
    def _history_entry_json(row: tuple[Any, ...]) -> str:
        number, pid, prompt, extra, outs, outputs, status_str, messages, meta, timings = row
        return (
            f'{{"prompt": [{number}, {json.dumps(pid)}, {prompt}, {extra}, {outs}], "outputs": {outputs or "{}"}, '
            f'"status": {{"status_str": {json.dumps(status_str)}, "completed": {json.dumps(status_str == "success")}, '
            f'"messages": {messages or "[]"}}}, "meta": {meta or "{}"}, "timings": {timings or "{}"}}}'
        )

    async def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        def query() -> dict[str, Any] | None:
            row = self.db.execute(
                f"SELECT {self._HISTORY_COLUMNS} FROM prompts WHERE state='done' AND prompt_id=?", (prompt_id,)
            ).fetchone()
            return self._history_entry(row) if row else None

        return await self._call(query)

    async def delete_history(self, prompt_ids: Iterable[str]) -> None:
        ids = [(pid,) for pid in prompt_ids if isinstance(pid, str)]
        await self._call(lambda: self.db.executemany("DELETE FROM prompts WHERE prompt_id=? AND state='done'", ids))

    async def clear_history(self) -> None:
        await self._call(lambda: self.db.execute("DELETE FROM prompts WHERE state='done'"))

    # --- jobs ----------------------------------------------------------------------------------------------------

    def _queue_jobs(self) -> list[dict[str, Any]]:
        jobs = []
        jobs.extend(queue_job(item, "in_progress") for item in self.running_items.values())
        jobs.extend(queue_job(item, "pending") for item in self.pending_sorted())
        return jobs

    async def jobs(
        self,
        statuses: set[str],
        workflow_id: str | None,
        sort_by: str,
        descending: bool,
        limit: int | None,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """Jobs matching the filters, sorted and paged, and how many matched in all."""
        found = [j for j in self._queue_jobs() if j["status"] in statuses]
        done_statuses = sorted(statuses & {"completed", "failed", "cancelled"})

        def query() -> list[dict[str, Any]]:
            if not done_statuses:
                return []
            sql = (
                "SELECT prompt_id, number_json, create_time, start_time, end_time, job_status, workflow_id, "
                "outputs_count, preview, error FROM prompts WHERE state='done' AND job_status IN "
                f"({','.join('?' * len(done_statuses))})"
            )
            params: list[Any] = list(done_statuses)
            if workflow_id is not None:
                sql += " AND workflow_id=?"
                params.append(workflow_id)
            return [done_job(row) for row in self.db.execute(sql, params).fetchall()]

        if workflow_id is not None:
            found = [j for j in found if j.get("workflow_id") == workflow_id]
        found += await self._call(query)

        def key(job: dict[str, Any]) -> tuple[int, float]:
            if sort_by == "execution_duration":
                start, end = job.get("execution_start_time"), job.get("execution_end_time")
                if start is None or end is None:
                    return (1, 0.0)  # jobs without a duration go last either way
                value = float(end - start)
            else:
                value = float(job["create_time"])
            return (0, -value if descending else value)

        found.sort(key=key)
        total = len(found)
        page = found[offset:] if limit is None else found[offset : offset + limit]
        return page, total

    async def job(self, prompt_id: str) -> dict[str, Any] | None:
        """Job detail: the job plus outputs, execution_status, timings and the workflow."""
        for job in self._queue_jobs():
            if job["id"] == prompt_id:
                item = self.running_items[prompt_id] if job["status"] == "in_progress" else self.pending[prompt_id]
                return {**job, "outputs": {}, "workflow": {"prompt": item.prompt, "extra_data": item.extra_data}}

        def query() -> dict[str, Any] | None:
            row = self.db.execute(
                "SELECT prompt_id, number_json, create_time, start_time, end_time, job_status, workflow_id, "
                "outputs_count, preview, error FROM prompts WHERE state='done' AND prompt_id=?",
                (prompt_id,),
            ).fetchone()
            if row is None:
                return None
            detail = self.db.execute(
                f"SELECT {self._HISTORY_COLUMNS} FROM prompts WHERE prompt_id=?", (prompt_id,)
            ).fetchone()
            entry = self._history_entry(detail)
            _, _, prompt, extra_data, _ = entry["prompt"]
            return {
                **done_job(row),
                "outputs": entry["outputs"],
                "execution_status": entry["status"],
                "timings": entry["timings"],
                "workflow": {"prompt": prompt, "extra_data": extra_data},
            }

        return await self._call(query)


def _pruned(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if v is not None}


def queue_job(item: QueueItem, status: str) -> dict[str, Any]:
    return _pruned(
        {
            "id": item.prompt_id,
            "status": status,
            "priority": item.number,
            "create_time": item.create_time,
            "execution_start_time": item.start_time,
            "workflow_id": item.workflow_id,
        }
    )


def done_job(row: tuple[Any, ...]) -> dict[str, Any]:
    pid, number, create_time, start, end, status, workflow_id, count, preview, error = row
    err = json.loads(error) if error else None
    if err is not None:
        err = {k: v for k, v in err.items() if k != "traceback"}
    return _pruned(
        {
            "id": pid,
            "status": status,
            "priority": json.loads(number),
            "create_time": create_time,
            "execution_start_time": start,
            "execution_end_time": end,
            "outputs_count": count,
            "preview_output": json.loads(preview) if preview else None,
            "workflow_id": workflow_id,
            "execution_error": err,
        }
    )
