"""The queue service (nodegraph/jobs.py) on the real SQLite store: a job enters whole, leaves in queue order with the
slot it was given, and after a restart comes back without its memory-only parts (workflow, credentials)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nodegraph.jobs import DuplicatePrompt, Job, JobQueue, QueueItem
from nodegraph.server.store import Finished, Store

# The queue never looks inside a workflow: an opaque object shows that the job hands back the very one it was given.
WORKFLOW = object()


def item(pid: str, number: int, client: str | None = None) -> QueueItem:
    extra = {"client_id": client} if client else {}
    return QueueItem(number, pid, {"1": {"class_type": "Spin", "inputs": {}}}, extra, ["1"])


async def open_queue(path: Path, reserved: list[str]) -> JobQueue:
    store = Store(path / "queue.db")
    await store.open()
    return JobQueue(store, on_client=reserved.append)


async def test_a_job_goes_through_enqueue_take_finish(tmp_path):
    reserved: list[str] = []
    queue = await open_queue(tmp_path, reserved)
    try:
        await queue.enqueue(Job(item("b", 2, client="alice"), WORKFLOW, secrets={"api_key_comfy_org": "k"}))
        await queue.enqueue(Job(item("a", 1), WORKFLOW))
        assert queue.wake.is_set() and reserved == ["alice"] and queue.remaining() == 2
        assert [i.prompt_id for i in queue.pending()] == ["a", "b"]

        with pytest.raises(DuplicatePrompt):
            await queue.enqueue(Job(item("a", 3), WORKFLOW))

        slots = iter(["slot-1"])
        job, slot = await queue.take(lambda prompt: next(slots, None))
        assert (job.prompt_id, slot, job.workflow) == ("a", "slot-1", WORKFLOW)
        assert queue.is_running("a") and [j.prompt_id for j in queue.running()] == ["a"]
        assert await queue.take(lambda prompt: None) is None  # "b" gets no slot: it stays first in the queue
        assert [i.prompt_id for i in queue.pending()] == ["b"]

        job.node = "1"
        assert queue.node_of("a") == "1" and job.node_type == "Spin"
        await queue.finish(job, Finished("success", "completed"))
        assert not queue.is_running("a") and queue.node_of("a") is None and queue.remaining() == 1
        with pytest.raises(DuplicatePrompt):  # in the history now
            await queue.enqueue(Job(item("a", 4), WORKFLOW))

        second, _ = await queue.take(lambda prompt: "slot-2")
        assert second.client == "alice" and second.workflow is WORKFLOW
        second.preview_method = "latent2rgb"
        # What the run gets: the stored extra_data plus the credentials, which the store never saw.
        assert second.extra_data == {"client_id": "alice", "api_key_comfy_org": "k", "preview_method": "latent2rgb"}
        assert "api_key_comfy_org" not in second.item.extra_data
    finally:
        await queue.store.close()


async def test_after_a_restart_a_pending_job_comes_back_without_its_memory_only_parts(tmp_path):
    queue = await open_queue(tmp_path, [])
    await queue.enqueue(Job(item("p", 1, client="bob"), WORKFLOW, secrets={"auth_token_comfy_org": "t"}))
    await queue.store.close()

    queue = await open_queue(tmp_path, [])
    try:
        job, _ = await queue.take(lambda prompt: "slot")
        assert job.prompt_id == "p" and job.client == "bob"
        assert job.workflow is None and job.secrets == {}  # validated again before it runs; credentials are gone
    finally:
        await queue.store.close()


async def test_removing_pending_jobs_forgets_them(tmp_path):
    queue = await open_queue(tmp_path, [])
    try:
        for number, pid in enumerate("xyz"):
            await queue.enqueue(Job(item(pid, number), WORKFLOW))
        assert await queue.remove(["y", "missing"]) == ["y"]
        assert sorted(await queue.clear()) == ["x", "z"]
        assert queue.remaining() == 0 and await queue.take(lambda prompt: "slot") is None
        await queue.enqueue(Job(item("n", 9), WORKFLOW))  # the queue still takes new jobs
        job, _ = await queue.take(lambda prompt: "slot")
        assert job.prompt_id == "n"
    finally:
        await queue.store.close()
