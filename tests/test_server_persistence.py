"""Nothing lost: `nodegraph serve` killed with SIGKILL while prompts wait, then restarted on the same data dir."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from support import ROOT
from support.server import http
from support.workflows import sleep_workflow


def _post(url: str, prompt: dict, **body) -> dict:
    status, data, _ = http("POST", f"{url}/api/prompt", {"prompt": prompt, **body})
    assert status == 200, data
    return json.loads(data)


def _get(url: str, path: str):
    status, data, _ = http("GET", url + path)
    assert status == 200, data
    return json.loads(data)


def _wait(condition) -> None:
    while not condition():
        time.sleep(0.02)


def test_kill_9_with_pending_prompts_then_restart(serve_process):
    server = serve_process()
    _post(server.url, sleep_workflow(120, value="victim"), prompt_id="running-one")
    _wait(lambda: _get(server.url, "/api/queue")["queue_running"])
    _post(server.url, sleep_workflow(0.05, value="first"), prompt_id="pending-1")
    _post(server.url, sleep_workflow(0.05, value="second"), prompt_id="pending-2", front=True)
    assert [i[1] for i in _get(server.url, "/api/queue")["queue_pending"]] == ["pending-2", "pending-1"]
    server.kill()  # SIGKILL: no cleanup at all

    again = serve_process()
    _wait(lambda: len(_get(again.url, "/api/history")) == 3)
    history = _get(again.url, "/api/history")
    assert list(history) == ["running-one", "pending-2", "pending-1"]  # the pending ones ran, front first
    failed = history["running-one"]["status"]
    assert failed["status_str"] == "error" and failed["completed"] is False
    kind, error = failed["messages"][-1]
    assert kind == "execution_error" and error["exception_message"] == "server stopped while running"
    assert history["running-one"]["prompt"][2]["1"]["inputs"]["value"] == "victim"
    for pid, text in (("pending-1", "first"), ("pending-2", "second")):
        assert history[pid]["status"]["status_str"] == "success"
        assert history[pid]["outputs"] == {"3": {"text": [text]}}
    job = _get(again.url, "/api/jobs/running-one")
    assert job["status"] == "failed" and job["execution_error"]["exception_type"] == "ServerStopped"
    # New prompts get numbers after the restored ones.
    assert _post(again.url, sleep_workflow(0))["number"] > history["pending-1"]["prompt"][0]
    again.stop()


def test_graceful_stop_records_the_running_prompt(serve_process):
    server = serve_process()
    _post(server.url, sleep_workflow(120), prompt_id="stopped")
    _wait(lambda: _get(server.url, "/api/queue")["queue_running"])
    server.stop()  # SIGTERM: the run is interrupted and recorded before the process exits
    again = serve_process()
    entry = _get(again.url, "/api/history/stopped")["stopped"]
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert _get(again.url, "/api/jobs/stopped")["status"] == "cancelled"
    again.stop()


def test_serve_startup_does_not_import_torch():
    code = (
        "import sys, asyncio\n"
        "from nodegraph.cli import build_parser\n"
        "from nodegraph.server import ServerConfig, create_app\n"
        "build_parser().parse_args(['serve'])\n"
        "create_app(ServerConfig())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "nodes")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
