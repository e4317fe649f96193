"""The bounded-resource suite (issue 17, items 2, 3, 5, 6, 7): a real `nodegraph serve` run under an address-space
limit (RLIMIT_AS, 3 GiB, set in the child before it starts) is sent the attacks that used to freeze it or exhaust
memory. Each must be refused or stopped with a precise error, the server must stay up and keep answering, and its
peak resident memory is printed."""
from __future__ import annotations

import json
import re
import resource
import time
from pathlib import Path
from typing import Any

import pytest

from support.hostile import gif_frames, png_bomb
from support.server import ServeProcess, http
from support.workflows import cycle, power_tower, string_doubling

pytestmark = pytest.mark.bounded

LIMIT = 3 << 30
PIXELS = 4_000_000  # the image budget of this server: a 1000x1000 GIF is refused at its 5th frame


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from nodegraph_testmodels.files import make_tiny_models

    base = tmp_path_factory.mktemp("bounded")
    make_tiny_models(base / "models")
    (base / "input").mkdir()
    png_bomb(base / "input" / "bomb12k.png", 12000, 12000)
    png_bomb(base / "input" / "bomb30k.png", 30000, 30000, complete=False)
    gif_frames(base / "input" / "frames.gif", 1000, 100)  # 100 M pixels over its frames
    served = ServeProcess(base, "--models-dir", str(base / "models"), "--device", "cpu", "--max-image-pixels",
                          str(PIXELS), preexec_fn=_limit_memory)
    proc, url, lines = served.proc, served.url, served.lines
    yield proc, url
    status = Path(f"/proc/{proc.pid}/status").read_text() if proc.poll() is None else ""
    peak = re.search(r"VmHWM:\s+(\d+) kB", status)
    print(f"\nbounded server: peak resident memory {int(peak.group(1)) / 1024:.0f} MiB" if peak else "")
    proc.kill()
    proc.wait()
    assert "Traceback" not in "".join(lines) or "MemoryError" not in "".join(lines), "".join(lines)[-3000:]


def alive(server: Any) -> None:
    proc, url = server
    assert proc.poll() is None, "the server died"
    status, body, _ = http("GET", f"{url}/api/system_stats")
    assert status == 200, body


def run(server: Any, prompt: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST the prompt; on acceptance wait for its history entry and return (200, entry), else (status, body)."""
    _, url = server
    status, body, _ = http("POST", f"{url}/api/prompt", {"prompt": prompt})
    answer = json.loads(body)
    if status != 200:
        return status, answer
    prompt_id = answer["prompt_id"]
    while True:
        entry = json.loads(http("GET", f"{url}/api/history/{prompt_id}")[1])
        if entry:
            return 200, entry[prompt_id]
        time.sleep(0.05)


def failure(entry: dict[str, Any]) -> dict[str, Any]:
    return next(data for kind, data in entry["status"]["messages"] if kind == "execution_error")


def test_item2_integer_towers_stop_at_once(server):
    for stages in (2, 3, 5):
        status, entry = run(server, power_tower(stages))
        assert status == 200 and failure(entry)["node_type"] == "IntMath"
        alive(server)


def test_item3_work_too_large_for_memory_is_refused_before_it_starts(server):
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 8192, "height": 8192, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 7.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "big", "images": ["8", 0]}},
    }
    status, entry = run(server, prompt)
    error = failure(entry)
    assert error["node_type"] == "KSampler" and "what fits is about" in error["exception_message"], error
    alive(server)
    prompt["5"]["inputs"].update(width=64, height=64)
    status, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    alive(server)


def test_item5_huge_cycles_get_small_answers(server):
    _, url = server
    for n in (2000, 10_000):
        status, body, _ = http("POST", f"{url}/api/prompt", {"prompt": cycle(n)})
        assert status == 400 and len(body) < 10_000
        alive(server)


def test_item6_image_bombs(server):
    _, url = server
    for name in ("bomb12k.png", "bomb30k.png"):
        status, body = run(server, {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                                    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
        assert status == 400 and "limit of" in json.dumps(body)
        for query in ("preview=webp;90", "channel=a", "channel=rgb"):
            assert http("GET", f"{url}/api/view?filename={name}&type=input&{query}")[0] == 413
        alive(server)
    status, entry = run(server, {"1": {"class_type": "LoadImage", "inputs": {"image": "frames.gif"}},
                                 "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    assert status == 200 and "frames" in failure(entry)["exception_message"]
    alive(server)


def test_item7_growing_values_and_big_bodies(server):
    _, url = server
    for steps in (15, 20, 26):
        status, entry = run(server, string_doubling(steps))
        assert status == 200 and "limit" in failure(entry)["exception_message"]
        assert len(json.dumps(entry)) < 100_000
        alive(server)
    big = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "z" * (20 << 20)}},
           "2": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}}}
    status, body, _ = http("POST", f"{url}/api/prompt", {"prompt": big})
    assert status == 413
    status, body, _ = http("GET", f"{url}/api/history")
    assert status == 200 and len(json.loads(body)) <= 200
    alive(server)
