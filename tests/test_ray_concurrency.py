"""`serve --executor ray --concurrency 2`: one Ray worker runs two prompts side by side on its one model cache, their
UNet calls shared; interrupting one leaves the other running; a worker that dies has each of its prompts retried
once. A local Ray instance, one 1-CPU worker, tiny SD checkpoints. Skipped as a whole when ray is not installed."""
from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

pytest.importorskip("ray", reason="the Ray executor is optional: pip install 'nodegraph[ray]'")

from support.ray import (  # noqa: E402
    get, history_entry, ready_workers, start_server, submit, wait_for, workers, write_checkpoints,
)
from support.server import ServerThread, http  # noqa: E402
from support.workflows import sleep_workflow, txt2img  # noqa: E402


@pytest.fixture(scope="module")
def server(ray_instance: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    base = tmp_path_factory.mktemp("ray_conc")
    write_checkpoints(base / "models", {"tiny.safetensors": 0})
    running = start_server(base, workers=1, concurrency=2, max_batch=16)
    ready_workers(running, 1)
    yield running
    running.__exit__(None, None, None)


def sd_prompt(seed: int, steps: int) -> dict[str, Any]:
    return txt2img(**{"4.ckpt_name": "tiny.safetensors", "3.seed": seed, "3.steps": steps,
                      "9.filename_prefix": f"conc_{seed}"})


def test_one_worker_runs_two_prompts_at_once_sharing_forwards_and_interrupt_stops_one(server: ServerThread) -> None:
    [worker] = workers(server)
    assert (worker["slots"], worker["concurrency"]) == (2, 2)
    shared_before = worker["batching"]["shared_forwards"]

    async def run() -> tuple[str, str, list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws?clientId=conc") as ws:
                await ws.receive_json()  # status

                async def post(prompt: dict[str, Any]) -> str:
                    reply = await session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": "conc"})
                    assert reply.status == 200, await reply.text()
                    return (await reply.json())["prompt_id"]

                long = await post(sd_prompt(1, steps=2000))
                short = await post(sd_prompt(2, steps=30))
                seen: list[dict[str, Any]] = []
                progressed: set[str] = set()
                left = {long, short}
                interrupted = False
                short_step = 0
                while left:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(msg.data)
                    seen.append(data)
                    kind, body = data["type"], data.get("data", {})
                    if kind == "progress":
                        progressed.add(body["prompt_id"])
                        short_step = body["value"] if body["prompt_id"] == short else short_step
                    if kind == "executing" and body.get("node") is None:
                        left.discard(body["prompt_id"])
                    if progressed == {long, short} and short_step >= 15 and not interrupted:
                        # Both are sampling on the one worker (and have shared forwards for a while): stop the long
                        # one only, halfway through the short one.
                        pool = get(server, "/workers")["workers"]
                        assert sorted(pool[0]["prompt_ids"]) == sorted([long, short])
                        status, body_text, _ = http("POST", server.url + "/interrupt", {"prompt_id": long})
                        assert status == 200, body_text
                        interrupted = True
                return long, short, seen

    long, short, seen = asyncio.run(run())
    ends = {m["data"]["prompt_id"]: m["type"] for m in seen
            if m["type"] in ("execution_success", "execution_interrupted", "execution_error")}
    errors = [m["data"] for m in seen if m["type"] == "execution_error"]
    assert ends == {long: "execution_interrupted", short: "execution_success"}, errors
    # Both were running at once: each reported progress before either finished.
    first_end = next(i for i, m in enumerate(seen) if m["type"] in ("execution_success", "execution_interrupted"))
    assert {m["data"]["prompt_id"] for m in seen[:first_end] if m["type"] == "progress"} == {long, short}
    assert history_entry(server, short)["status"]["completed"]
    assert history_entry(server, long)["status"]["status_str"] == "error"
    [worker] = workers(server)
    # The worker's model cache ran UNet forwards shared by the two prompts.
    assert worker["batching"]["shared_forwards"] > shared_before
    assert worker["file_reads"] == 1  # one checkpoint read for both prompts
    assert worker["state"] == "idle" and worker["prompt_ids"] == []


def test_a_killed_worker_has_each_of_its_prompts_retried_once(server: ServerThread) -> None:
    first = submit(server, sleep_workflow(3.0, "one"))
    second = submit(server, sleep_workflow(3.0, "two"))
    victim = wait_for(lambda: next((w for w in workers(server) if sorted(w["prompt_ids"]) == sorted([first, second])),
                                   None), "both prompts to run on the worker")
    os.kill(victim["pid"], signal.SIGKILL)
    assert history_entry(server, first)["outputs"]["3"]["text"] == ["one"]
    assert history_entry(server, second)["outputs"]["3"]["text"] == ["two"]
    pool = get(server, "/workers")
    for pid in (first, second):
        tried = pool["retried"][pid]
        assert len(tried) == 2 and tried[0] == victim["id"] and tried[1] != victim["id"]
    assert pool["concurrency"] == 2
    assert victim["id"] not in {w["id"] for w in ready_workers(server, 1)}  # replaced
