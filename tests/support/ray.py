"""Helpers for the Ray executor tests: a small local Ray instance, a server running on it in a thread, tiny SD
checkpoints, and waiting for prompts over HTTP."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from .server import ServerThread, http, make_config

# A bound on waiting for something that must happen; a hang then fails with a message instead of blocking CI.
PATIENCE = 120.0


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """A local Ray with 4 CPU slots (two 1-CPU workers fit twice over), a small object store, no dashboard."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


def write_checkpoints(models_root: Path, names: dict[str, int]) -> None:
    """Tiny SD1 checkpoints `{file name: weights seed}` in models_root/checkpoints."""
    from nodegraph_nodes.diffusion.keymap import write_single_file
    from nodegraph_nodes.diffusion.tiny import tiny_sd1

    for name, seed in names.items():
        write_single_file(tiny_sd1(seed), models_root / "checkpoints" / name)


def start_server(base: Path, **overrides: Any) -> ServerThread:
    """The real server with the Ray executor (2 workers unless told otherwise), CPU models."""
    config = make_config(base, executor="ray", **{"workers": 2, **overrides})
    config.folders.settings["device"] = "cpu"
    return ServerThread(config).__enter__()


def submit(server: ServerThread, prompt: dict[str, Any], **extra: Any) -> str:
    status, body, _ = http("POST", server.url + "/prompt", {"prompt": prompt, **extra})
    assert status == 200, body
    return json.loads(body)["prompt_id"]


def get(server: ServerThread, path: str) -> Any:
    status, body, _ = http("GET", server.url + path)
    assert status == 200, body
    return json.loads(body)


def wait_for(check: Any, what: str, patience: float = PATIENCE) -> Any:
    """Poll `check()` until it returns something truthy."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def history_entry(server: ServerThread, prompt_id: str) -> dict[str, Any]:
    """The prompt's history entry, once it has finished."""
    return wait_for(lambda: get(server, f"/history/{prompt_id}").get(prompt_id), f"prompt {prompt_id} to finish")


def workers(server: ServerThread) -> list[dict[str, Any]]:
    return get(server, "/workers")["workers"]


def ready_workers(server: ServerThread, count: int) -> list[dict[str, Any]]:
    """Wait until `count` workers are ready (idle or busy) and none is starting."""
    def check() -> list[dict[str, Any]] | None:
        found = workers(server)
        ready = [w for w in found if w["state"] != "starting"]
        return found if len(ready) == count == len(found) else None

    return wait_for(check, f"{count} ready workers")


def worker_of(server: ServerThread, prompt_id: str) -> dict[str, Any]:
    """The worker running the prompt now."""
    return wait_for(lambda: next((w for w in workers(server) if w["prompt_id"] == prompt_id), None),
                    f"prompt {prompt_id} to run")
