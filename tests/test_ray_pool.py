"""The server on the Ray executor (`executor="ray"`): a local Ray instance started here, two 1-CPU workers, the test
pack and tiny SD checkpoints. Skipped as a whole when ray is not installed."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

pytest.importorskip("ray", reason="the Ray executor is optional: pip install 'nodegraph[ray]'")

from support.ray import (  # noqa: E402
    get, history_entry, ready_workers, start_server, submit, wait_for, worker_of, workers, write_checkpoints,
)
from support.server import ServerThread, http  # noqa: E402
from support.workflows import image_workflow, sleep_workflow, txt2img  # noqa: E402

CHECKPOINTS = {"tiny_a.safetensors": 0, "tiny_b.safetensors": 1}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray")
    write_checkpoints(root / "models", CHECKPOINTS)
    return root


@pytest.fixture(scope="module")
def server(ray_instance: Any, base: Path) -> Iterator[ServerThread]:
    running = start_server(base)
    ready_workers(running, 2)
    yield running
    running.__exit__(None, None, None)


def sd_prompt(ckpt: str, seed: int = 42) -> dict[str, Any]:
    return txt2img(**{"4.ckpt_name": ckpt, "3.seed": seed, "3.steps": 2, "9.filename_prefix": f"ray_{seed}"})


def image_files(server: ServerThread, entry: dict[str, Any]) -> list[Path]:
    root = server.config.folders.output_dir
    return [root / image["subfolder"] / image["filename"]
            for output in entry["outputs"].values() for image in output.get("images", [])]


def test_prompts_run_at_once_spread_over_workers(server: ServerThread) -> None:
    ids = [submit(server, sleep_workflow(0.6, f"v{i}")) for i in range(4)]
    wait_for(lambda: len(get(server, "/queue")["queue_running"]) == 2, "two prompts running at once")
    entries = [history_entry(server, pid) for pid in ids]
    assert [e["outputs"]["3"]["text"] for e in entries] == [["v0"], ["v1"], ["v2"], ["v3"]]
    ran_on = {w["id"]: set(w["recent_prompts"]) & set(ids) for w in workers(server)}
    assert sorted(len(found) for found in ran_on.values()) == [2, 2]


def test_progress_previews_and_files_stream_to_the_client(server: ServerThread) -> None:
    """The websocket sees the local executor's sequence; the PNG lands in the server's output folder."""

    async def run() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws?clientId=viewer") as ws:
                await ws.receive_json()  # status
                reply = await session.post(server.url + "/prompt", json={"prompt": image_workflow(steps=3, prefix="ws"),
                                                                         "client_id": "viewer",
                                                                         "extra_data": {"preview_method": "auto"}})
                pid = (await reply.json())["prompt_id"]
                seen: list[Any] = []
                while True:
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        seen.append(msg.data)
                        continue
                    data = json.loads(msg.data)
                    if data["type"] in ("status", "progress_state"):
                        continue
                    seen.append(data)
                    if data["type"] == "executing" and data["data"]["node"] is None:
                        return [pid, seen]

    pid, seen = asyncio.run(run())
    kinds = ["binary" if isinstance(m, bytes) else m["type"] for m in seen]
    assert kinds == ["execution_start", "execution_cached", "executing", "progress", "binary", "progress", "binary",
                     "progress", "binary", "executing", "executed", "execution_success", "executing"]
    assert all(m["data"]["prompt_id"] == pid for m in seen if isinstance(m, dict))
    from PIL import Image

    preview = Image.open(io.BytesIO(seen[4][8:]))
    assert preview.format == "JPEG" and max(preview.size) <= server.config.preview_size
    [path] = image_files(server, history_entry(server, pid))
    assert Image.open(path).getpixel((0, 0)) == (128, 127, 64)


def test_affinity_keeps_each_checkpoint_on_the_worker_that_read_it(server: ServerThread) -> None:
    before = {w["id"]: w["file_reads"] for w in workers(server)}
    for seed, ckpt in enumerate(["tiny_a.safetensors", "tiny_b.safetensors"] * 3):
        assert history_entry(server, submit(server, sd_prompt(ckpt, seed)))["status"]["completed"]
    after = {w["id"]: (w["file_reads"] - before[w["id"]], set(w["models"])) for w in workers(server)}
    assert sorted(after.values(), key=str) == sorted(
        [(1, {"tiny_a.safetensors"}), (1, {"tiny_b.safetensors"})], key=str)


def test_results_equal_the_local_executor(server: ServerThread, base: Path, tmp_path: Path) -> None:
    from PIL import Image

    from nodegraph.run_once import PromptRunner
    from support.registry import make_registry

    prompt = sd_prompt("tiny_a.safetensors", seed=1234)
    [remote] = image_files(server, history_entry(server, submit(server, prompt)))
    folders = server.config.folders
    local_folders = type(folders)(models_dirs=folders.models_dirs, output_dir=tmp_path, settings={"device": "cpu"})
    result = PromptRunner(local_folders, make_registry()).run(prompt, "local")
    assert result.ok, result.error
    [local] = [tmp_path / image["filename"] for image in result.outputs["9"]["images"]]
    assert Image.open(remote).tobytes() == Image.open(local).tobytes()


def test_interrupt_and_cancel_reach_the_worker(server: ServerThread) -> None:
    first = submit(server, sleep_workflow(60, "long"))
    worker_of(server, first)
    assert http("POST", server.url + "/interrupt", {"prompt_id": first})[0] == 200
    assert history_entry(server, first)["status"]["status_str"] == "error"
    assert get(server, f"/jobs/{first}")["status"] == "cancelled"

    second = submit(server, sleep_workflow(60, "long"))
    worker_of(server, second)
    status, body, _ = http("POST", server.url + f"/jobs/{second}/cancel")
    assert (status, json.loads(body)["result"]) == (200, "interrupted")
    history_entry(server, second)
    assert get(server, f"/jobs/{second}")["status"] == "cancelled"


def test_a_killed_worker_has_its_prompt_retried_once(server: ServerThread) -> None:
    retries = get(server, "/workers")["retries"]
    pid = submit(server, sleep_workflow(2.0, "survivor"))
    victim = worker_of(server, pid)
    os.kill(victim["pid"], signal.SIGKILL)
    entry = history_entry(server, pid)
    assert entry["status"]["completed"] and entry["outputs"]["3"]["text"] == ["survivor"]
    pool = get(server, "/workers")
    assert pool["retries"] == retries + 1
    tried = pool["retried"][pid]
    assert len(tried) == 2 and tried[0] == victim["id"] and tried[1] != victim["id"]
    assert victim["id"] not in {w["id"] for w in ready_workers(server, 2)}  # replaced


def test_a_prompt_whose_workers_die_twice_fails_and_the_queue_goes_on(server: ServerThread) -> None:
    pid = submit(server, sleep_workflow(30, "doomed"))
    after = submit(server, sleep_workflow(0.1, "next"))
    first = worker_of(server, pid)
    os.kill(first["pid"], signal.SIGKILL)
    second = wait_for(lambda: next((w for w in workers(server) if w["prompt_id"] == pid and w["id"] != first["id"]),
                                   None), "the retry to start")
    os.kill(second["pid"], signal.SIGKILL)
    entry = history_entry(server, pid)
    assert entry["status"]["status_str"] == "error"
    error = entry["status"]["messages"][-1][1]
    assert error["exception_type"] == "WorkerDied" and "tried 2 times" in error["exception_message"]
    assert history_entry(server, after)["outputs"]["3"]["text"] == ["next"]
    ready_workers(server, 2)


def test_workers_join_and_leave_at_run_time(server: ServerThread) -> None:
    status, body, _ = http("POST", server.url + "/workers", {"size": 3})
    assert status == 200, body
    assert len(ready_workers(server, 3)) == 3
    ids = [submit(server, sleep_workflow(0.5, f"w{i}")) for i in range(3)]
    wait_for(lambda: len(get(server, "/queue")["queue_running"]) == 3, "three prompts running at once")
    assert all(history_entry(server, pid)["status"]["completed"] for pid in ids)
    assert http("POST", server.url + "/workers", {"size": 2})[0] == 200
    ready_workers(server, 2)
    assert http("POST", server.url + "/workers", {"size": -1})[0] == 400


def test_workers_without_the_servers_disk_send_their_files(ray_instance: Any, tmp_path: Path) -> None:
    """Pointed at another output folder, a worker sends the PNG's bytes; a name the server has is not
    overwritten."""
    from PIL import Image

    remote = start_server(tmp_path, workers=1, worker_output_dir=tmp_path / "worker")
    try:
        [info] = ready_workers(remote, 1)
        assert info["ship_outputs"]
        taken = remote.config.folders.output_dir / "far_00001_.png"
        taken.parent.mkdir(parents=True, exist_ok=True)
        taken.write_bytes(b"someone else's")
        entry = history_entry(remote, submit(remote, image_workflow(steps=1, shade=10, prefix="far")))
        [path] = image_files(remote, entry)
        assert path.name == "far_00001__1.png" and taken.read_bytes() == b"someone else's"
        assert Image.open(path).getpixel((0, 0)) == (10, 245, 64)
        assert not list((tmp_path / "worker").rglob("*.png"))
    finally:
        remote.__exit__(None, None, None)
