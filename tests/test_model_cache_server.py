"""The model cache behind the server: a hit on the second prompt, /system_stats listing what is loaded, /free
unloading it, and the OOM retry."""
import asyncio

import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

from nodegraph.server import create_app
from nodegraph.server.state import STATE
from nodegraph_nodes.diffusion.cache_readers import model_cache
from nodegraph_nodes.diffusion.model_cache import ModelCache
from nodegraph_nodes.diffusion.ops import OutOfMemory, with_oom_retry
from support.server import finished, make_config, messages_until, open_ws
from support.workflows import txt2img


async def run_prompt(client, ws, prompt):
    response = await client.post("/api/prompt", json={"prompt": prompt, "client_id": "cache-test"})
    assert response.status == 200, await response.text()
    prompt_id = (await response.json())["prompt_id"]
    messages = await messages_until(ws, finished(prompt_id))
    assert any(isinstance(m, dict) and m["type"] == "execution_success" for m in messages)


async def models_stats(client):
    stats = await (await client.get("/api/system_stats")).json()
    return stats["nodegraph"]["resources"]["models"]


async def test_second_prompt_hits_and_free_unloads(tmp_path, models_root):
    config = make_config(tmp_path)
    config.folders.models_dirs = [models_root]
    app = create_app(config)
    async with TestClient(TestServer(app)) as client:
        ws, _ = await open_ws(client, "cache-test")
        reads = model_cache(app[STATE].executor.runtime).stats()["file_reads"]
        await run_prompt(client, ws, txt2img())
        await run_prompt(client, ws, txt2img(**{"3.seed": 9, "6.text": "another prompt"}))
        stats = await models_stats(client)
        assert stats["file_reads"] - reads == 1  # read once for both prompts
        loaded = {(e["file"], e["component"]) for e in stats["loaded"]}
        assert {("tiny_sd1.safetensors", c) for c in ("unet", "clip", "vae")} <= loaded
        assert stats["bytes_total"] > 0 and stats["device"] == "cpu"

        response = await client.post("/api/free", json={"unload_models": True})
        assert response.status == 200
        for _ in range(50):  # /free is applied by the worker, between prompts
            if not (await models_stats(client))["loaded"]:
                break
            await asyncio.sleep(0.1)
        assert (await models_stats(client))["loaded"] == []
        await ws.close()


def test_oom_is_retried_once_after_freeing():
    cache = ModelCache(device="cpu")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "done"

    assert with_oom_retry(cache, flaky) == "done" and len(calls) == 2


def test_second_oom_reports_what_to_change():
    cache = ModelCache(device="cpu")

    def always():
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfMemory, match="smaller image or batch"):
        with_oom_retry(cache, always)
    with pytest.raises(ValueError, match="not memory"):
        with_oom_retry(cache, lambda: (_ for _ in ()).throw(ValueError("not memory")))
