"""`serve --concurrency N`: prompts run side by side on one model cache, their UNet calls batched. Each client gets
its own messages and images, a prompt's image is the one it gets alone, and interrupting, deleting or failing one
prompt leaves the others running."""
from __future__ import annotations

import asyncio
import io

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from nodegraph.server import create_app
from support.workflows import txt2img
from support.server import finished, make_config, messages_until, open_ws

PROMPTS = [("a red circle", 1), ("a blue square", 2), ("a green triangle and a long prompt " * 6, 3)]


def _config(tmp_path, models_root, concurrency: int, max_batch: int = 16):
    config = make_config(tmp_path, concurrency=concurrency, max_batch=max_batch)
    config.folders.models_dirs = [models_root]
    config.folders.settings = {"device": "cpu", **({"max_batch": max_batch} if concurrency > 1 else {})}
    return config


def _prompt(text: str, seed: int, prefix: str, steps: int = 6) -> dict:
    return txt2img(**{"6.text": text, "3.seed": seed, "3.steps": steps, "9.filename_prefix": prefix})


async def _submit(client, prompt: dict, client_id: str) -> str:
    response = await client.post("/api/prompt", json={"prompt": prompt, "client_id": client_id})
    assert response.status == 200, await response.text()
    return (await response.json())["prompt_id"]


async def _image(client, messages: list, prompt_id: str) -> np.ndarray:
    executed = [m for m in messages if isinstance(m, dict) and m["type"] == "executed"
                and m["data"]["prompt_id"] == prompt_id]
    (entry,) = executed[-1]["data"]["output"]["images"]
    response = await client.get("/api/view", params={"filename": entry["filename"], "type": entry["type"],
                                                     "subfolder": entry["subfolder"]})
    assert response.status == 200
    return np.asarray(Image.open(io.BytesIO(await response.read())).convert("RGB")).astype(np.int16)


async def _until_all_finished(ws, prompt_ids: set[str]) -> list:
    """Messages (binary frames as bytes) until every prompt in `prompt_ids` has sent its final `executing`."""
    messages: list = []
    left = set(prompt_ids)
    while left:
        messages += await messages_until(ws, lambda m: m["type"] == "executing" and m["data"]["node"] is None
                                         and m["data"]["prompt_id"] in left)
        left.discard(messages[-1]["data"]["prompt_id"])
    return messages


def _events(messages: list, kind: str) -> list[str]:
    return [m["data"]["prompt_id"] for m in messages if isinstance(m, dict) and m["type"] == kind]


async def _alone(tmp_path, models_root) -> list[np.ndarray]:
    """The reference: each prompt run on its own, one at a time (no batching)."""
    images = []
    async with TestClient(TestServer(create_app(_config(tmp_path / "alone", models_root, 1)))) as client:
        ws, _ = await open_ws(client, "alone")
        for i, (text, seed) in enumerate(PROMPTS):
            pid = await _submit(client, _prompt(text, seed, f"alone{i}"), "alone")
            images.append(await _image(client, await messages_until(ws, finished(pid)), pid))
        await ws.close()
    return images


async def test_concurrent_prompts_get_their_own_messages_and_the_images_they_get_alone(tmp_path, models_root):
    reference = await _alone(tmp_path, models_root)
    shared_before = 0  # the side-by-side server's runtime has a model cache of its own, made for it
    async with TestClient(TestServer(create_app(_config(tmp_path / "side", models_root, 3)))) as client:
        sockets = [(await open_ws(client, f"user{i}"))[0] for i in range(3)]
        ids = await asyncio.gather(*(_submit(client, _prompt(text, seed, f"side{i}"), f"user{i}")
                                     for i, (text, seed) in enumerate(PROMPTS)))
        received = await asyncio.gather(*(messages_until(ws, finished(pid)) for ws, pid in zip(sockets, ids)))
        for i, (messages, pid) in enumerate(zip(received, ids)):
            own = [m for m in messages if isinstance(m, dict) and m["type"] in
                   ("execution_start", "executing", "executed", "progress", "progress_state", "execution_success")]
            # nothing of the other prompts' clients, not even progress_state (broadcast when one runs at a time)
            assert {m["data"]["prompt_id"] for m in own} == {pid}
            assert any(m["type"] == "progress_state" for m in own)
            assert any(m["type"] == "execution_success" for m in own)
            image = await _image(client, messages, pid)
            assert np.abs(image - reference[i]).max() <= 1  # within 1/255 of the prompt's image alone
        history = await (await client.get("/api/history")).json()
        for pid in ids:
            timings = history[pid]["timings"] if "timings" in history[pid] else history[pid]["meta"]
            assert timings  # each prompt has its own record
        stats = (await (await client.get("/api/system_stats")).json())["nodegraph"]["resources"]["models"]
        # The three prompts shared UNet forwards (they sample together: same model, same latent size).
        assert stats["batching"]["shared_forwards"] > shared_before
        assert stats["max_batch"] == 16
        for ws in sockets:
            await ws.close()


async def test_interrupt_and_delete_one_prompt_leave_the_others_running(tmp_path, models_root):
    async with TestClient(TestServer(create_app(_config(tmp_path, models_root, 2)))) as client:
        ws, _ = await open_ws(client, "user")
        long_a = await _submit(client, _prompt("a red circle", 1, "a", steps=400), "user")
        long_b = await _submit(client, _prompt("a blue square", 2, "b", steps=30), "user")
        pending = await _submit(client, _prompt("a green circle", 3, "c", steps=4), "user")
        # Both running prompts are sampling (a progress message from each), the third waits for a slot.
        seen: set[str] = set()
        messages: list = []
        while seen != {long_a, long_b}:
            msg = await ws.receive_json()
            messages.append(msg)
            if msg["type"] == "progress":
                seen.add(msg["data"]["prompt_id"])
        queue = await (await client.get("/api/queue")).json()
        assert {item[1] for item in queue["queue_running"]} == {long_a, long_b}
        assert [item[1] for item in queue["queue_pending"]] == [pending]
        assert (await client.post("/api/queue", json={"delete": [pending]})).status == 200
        assert (await client.post("/api/interrupt", json={"prompt_id": long_a})).status == 200

        messages += await _until_all_finished(ws, {long_a, long_b})
        assert _events(messages, "execution_interrupted") == [long_a]
        assert _events(messages, "execution_success") == [long_b]
        history = await (await client.get("/api/history")).json()
        assert history[long_a]["status"]["status_str"] == "error"
        assert history[long_b]["status"]["status_str"] == "success"
        assert pending not in history  # deleted before it ran
        await ws.close()


async def test_an_error_in_one_prompt_does_not_touch_the_others(tmp_path, models_root):
    reference = (await _alone(tmp_path, models_root))[0]
    async with TestClient(TestServer(create_app(_config(tmp_path / "side", models_root, 2)))) as client:
        ws, _ = await open_ws(client, "user")
        good = await _submit(client, _prompt(*PROMPTS[0], "good"), "user")
        # Far too large for this machine: refused by the memory estimate when the sampler starts (a run-time error).
        bad_prompt = _prompt("a blue square", 2, "bad")
        bad_prompt["5"]["inputs"].update(width=16384, height=16384, batch_size=64)
        bad = await _submit(client, bad_prompt, "user")
        messages = await _until_all_finished(ws, {good, bad})
        assert _events(messages, "execution_error") == [bad]
        assert _events(messages, "execution_success") == [good]
        assert np.abs(await _image(client, messages, good) - reference).max() <= 1
        await ws.close()
