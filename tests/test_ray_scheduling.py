"""The Ray executor's parts that need no Ray: model affinity, output files sent as bytes, and that the local
server never imports Ray."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nodegraph.distributed.outputs import collect_files, rename_entries, store_files
from nodegraph.distributed.scheduling import WorkerLoad, choose_worker, prompt_models
from nodegraph.engine import Folders
from support import ROOT
from support.workflows import txt2img


def test_prompt_models_reads_loader_constants_by_file_name() -> None:
    prompt = txt2img(**{"4.ckpt_name": "sd/base.safetensors"})
    prompt["20"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_vae.safetensors"}}
    prompt["21"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["30", 0]}}  # a link: unknown
    assert prompt_models(prompt) == {"base.safetensors", "tiny_vae.safetensors"}


def test_choose_worker_prefers_the_model_then_the_least_loaded() -> None:
    warm_a = WorkerLoad("a", frozenset({"x.safetensors"}), loaded_bytes=100, prompts_run=5)
    warm_b = WorkerLoad("b", frozenset({"y.safetensors"}), loaded_bytes=100, prompts_run=1)
    empty = WorkerLoad("c", prompts_run=9)
    assert choose_worker(frozenset({"x.safetensors"}), [warm_b, empty, warm_a]) is warm_a
    assert choose_worker(frozenset({"z.safetensors"}), [warm_a, warm_b, empty]) is empty  # no model: least loaded
    assert choose_worker(frozenset(), [warm_a, warm_b]) is warm_b  # same bytes: fewer prompts run
    assert choose_worker(frozenset({"x.safetensors"}), []) is None


def test_choose_worker_takes_a_worker_with_a_free_slot_least_running_first() -> None:
    """With --concurrency a busy worker with a free slot is a candidate: the model it holds wins, else the one
    running fewest prompts."""
    busy_warm = WorkerLoad("a", frozenset({"x.safetensors"}), loaded_bytes=100, running=1)
    idle_cold = WorkerLoad("b", frozenset({"y.safetensors"}), loaded_bytes=100)
    busy_cold = WorkerLoad("c", running=1)
    assert choose_worker(frozenset({"x.safetensors"}), [idle_cold, busy_warm]) is busy_warm
    assert choose_worker(frozenset({"z.safetensors"}), [busy_warm, busy_cold, idle_cold]) is idle_cold
    assert choose_worker(frozenset(), [busy_warm]) is busy_warm


def test_output_files_travel_as_bytes_without_overwriting(tmp_path: Path) -> None:
    worker = Folders(output_dir=tmp_path / "worker" / "output", temp_dir=tmp_path / "worker" / "temp")
    server = Folders(output_dir=tmp_path / "server" / "output", temp_dir=tmp_path / "server" / "temp")
    (worker.output_dir / "sub").mkdir(parents=True)
    (worker.output_dir / "sub" / "a.png").write_bytes(b"new a")
    worker.temp_dir.mkdir(parents=True)
    (worker.temp_dir / "p.png").write_bytes(b"preview")
    ui = {"images": [{"filename": "a.png", "subfolder": "sub", "type": "output"},
                     {"filename": "p.png", "subfolder": "", "type": "temp"}], "text": ["not a file"]}
    (server.output_dir / "sub").mkdir(parents=True)
    (server.output_dir / "sub" / "a.png").write_bytes(b"an older a")

    files = collect_files(ui, worker)
    assert [f["data"] for f in files] == [b"new a", b"preview"]
    assert not (worker.output_dir / "sub" / "a.png").exists()  # the server's copy is the one that counts
    renames = store_files(files, server)
    rename_entries(ui, renames)
    assert ui["images"][0] == {"filename": "a_1.png", "subfolder": "sub", "type": "output"}
    assert (server.output_dir / "sub" / "a.png").read_bytes() == b"an older a"
    assert (server.output_dir / "sub" / "a_1.png").read_bytes() == b"new a"
    assert (server.temp_dir / "p.png").read_bytes() == b"preview"


def test_local_server_and_cli_never_import_ray(tmp_path: Path) -> None:
    """The default executor runs a prompt without Ray in sys.modules (Ray is optional, and slow to import)."""
    script = f"""
import asyncio, sys
sys.path[:0] = [{str(ROOT / 'tests')!r}]
from aiohttp.test_utils import TestClient, TestServer
from nodegraph.cli import build_parser
from nodegraph.server import create_app
from support.server import make_config
from support.workflows import math_workflow
from pathlib import Path

build_parser().parse_args(["serve", "--executor", "local"])

async def main():
    async with TestClient(TestServer(create_app(make_config(Path({str(tmp_path)!r}))))) as client:
        reply = await (await client.post("/prompt", json={{"prompt": math_workflow()}})).json()
        while not (await (await client.get("/history/" + reply["prompt_id"])).json()):
            await asyncio.sleep(0.02)
        assert (await (await client.get("/workers")).json())["name"] == "local"

asyncio.run(main())
print("ray imported:", "ray" in sys.modules)
"""
    env_path = [str(ROOT), str(ROOT / "nodes")]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": ":".join(env_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "ray imported: False" in done.stdout


def test_serve_refuses_ray_options_without_the_ray_executor(capsys) -> None:
    from nodegraph.cli import EXIT_INVALID, build_parser, main

    assert main(["serve", "--workers", "2"]) == EXIT_INVALID
    assert "need --executor ray" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--executor", "ray", "--workers", "auto", "--ray-address", "auto"])
    assert (args.executor, args.workers, args.ray_address) == ("ray", None, "auto")


def test_serve_takes_concurrency_with_the_ray_executor(capsys, tmp_path: Path) -> None:
    """`--concurrency N` is per Ray worker: accepted with --executor ray (the run stops later, at a conflict of
    editor options, so no server starts)."""
    import pytest

    pytest.importorskip("ray")
    from nodegraph.cli import EXIT_INVALID, main

    code = main(["serve", "--executor", "ray", "--concurrency", "2", "--max-batch", "8",
                 "--frontend", "comfyui", "--web-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_INVALID and "--frontend and --web-root" in err and "concurrency" not in err
