"""torch, diffusers and transformers are imported in the background once `nodegraph serve` listens, and the time a
first prompt waits for them is reported as `imports`, not inside Load Checkpoint's time (nodegraph/warmup.py)."""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from nodegraph.engine import default_registry
from nodegraph.paths import project_dir
from nodegraph.warmup import Warmup
from support.server import http


def test_packs_name_their_heavy_imports():
    registry = default_registry()
    sd = registry.warm_imports(["KSampler"])
    assert "nodegraph_nodes.diffusion.ops" in sd and "nodegraph_nodes.diffusion.checkpoint_files" in sd
    assert registry.warm_imports(["IntMath", "ShowText"]) == []  # utility nodes need no torch
    assert set(sd) <= set(registry.warm_imports())


def test_warmup_imports_on_a_thread_and_reports_its_time(tmp_path, monkeypatch):
    (tmp_path / "fh_slow_module.py").write_text("import time\ntime.sleep(0.3)\nLOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    warmup = Warmup(["fh_slow_module", "fh_no_such_module"])
    assert warmup.state == "idle" and warmup.wait() == 0.0  # never started: nothing to wait for
    warmup.start()
    assert warmup.state == "importing"
    waited = warmup.wait()
    assert warmup.state == "done" and waited > 0
    assert warmup.seconds >= 0.3 and sys.modules["fh_slow_module"].LOADED
    assert Warmup([]).status()["state"] == "idle"


def test_serve_imports_in_the_background_and_reports_the_wait(serve_process):
    server = serve_process()
    prompt = json.loads((project_dir("workflows") / "txt2img.json").read_text())
    status, body, _ = http("POST", server.url + "/prompt", {"prompt": prompt})
    assert status == 200, body
    prompt_id = json.loads(body)["prompt_id"]
    entry = None
    while entry is None or not entry["status"]["status_str"]:
        time.sleep(0.1)
        entry = json.loads(http("GET", f"{server.url}/history/{prompt_id}")[1]).get(prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    timings = entry["timings"]
    # the prompt came right after the server listened: it waited for the import, and that wait is its own entry
    assert timings["imports"] > 0 and set(timings) == {"imports", "3", "4", "5", "6", "7", "8", "9"}
    image = entry["outputs"]["9"]["images"][0]
    assert (Path(server.proc.args[server.proc.args.index("--output-dir") + 1]) / image["filename"]).is_file()
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait() == 0
    server._drain.join()
    log = "".join(server.lines)
    assert log.count("imported the node packs' libraries in") == 1
    assert "should be kept in float32" not in log
