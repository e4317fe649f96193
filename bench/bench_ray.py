"""The Ray executor: queue throughput with 1, 2 and 4 workers, and the per-prompt overhead against the local one.

Starts `python -m nodegraph serve --port 0` (local, then `--executor ray --workers N`, each starting its own local
Ray instance) on temporary folders with a tiny SD1 checkpoint, and drives it over HTTP and one websocket (prompts
queued without a client_id are broadcast, so one socket sees every prompt end). Workloads:

- sleep: `--prompts` Sleep(0.25 s) prompts queued at once: what the pool can overlap when nodes wait;
- sd: `--prompts` tiny SD1 txt2img prompts (64x64, 4 steps, distinct seeds) queued at once: CPU-bound work;
- overhead: `--latency-prompts` trivial utility prompts one after the other, POST -> `executing null` latency.

    python bench/bench_ray.py --workers 1 2 4 --prompts 16

Ray sets OMP_NUM_THREADS in each worker from its CPU reservation (1 thread here), while the local server's torch
uses one thread per core; on a busy machine that alone changes the tiny SD figures several-fold, so compare with
`OMP_NUM_THREADS=1 python bench/bench_ray.py ...` as well.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT), str(ROOT / "nodes")]

from support.server import ServeProcess  # noqa: E402
from support.workflows import sleep_workflow, txt2img  # noqa: E402


def sleep_prompt(index: int) -> dict[str, Any]:
    return sleep_workflow(0.25, f"v{index}")


def sd_prompt(index: int) -> dict[str, Any]:
    return txt2img(seed=index, prefix="bench")


def math_prompt(index: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": index}},
        "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "op": "add", "b": ["1", 0]}},
        "3": {"class_type": "ShowText", "inputs": {"value": ["2", 0]}},
    }


class Server:
    """`nodegraph serve` in a subprocess, on fresh folders under `base`."""

    def __init__(self, base: Path, models: Path, *extra: str):
        base.mkdir(parents=True)
        served = ServeProcess(base, "--models-dir", str(models), "--device", "cpu", *extra)
        self.proc, self.url = served.proc, served.url

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


async def wait_ready(session: aiohttp.ClientSession, url: str, workers: int) -> None:
    while True:
        stats = await (await session.get(f"{url}/workers")).json()
        ready = [w for w in stats.get("workers", []) if w["state"] == "idle"]
        if stats["name"] == "local" or len(ready) == workers:
            return
        await asyncio.sleep(0.2)


async def run_batch(session: aiohttp.ClientSession, ws: Any, url: str, prompts: list[dict[str, Any]]) -> float:
    """Queue all prompts at once; seconds until the last one ends."""
    started = time.perf_counter()
    pending = set()
    for prompt in prompts:
        reply = await (await session.post(f"{url}/prompt", json={"prompt": prompt})).json()
        pending.add(reply["prompt_id"])
    while pending:
        frame = await ws.receive()
        if frame.type != aiohttp.WSMsgType.TEXT:
            continue  # preview images
        msg = json.loads(frame.data)
        if msg["type"] == "executing" and msg["data"]["node"] is None:
            pending.discard(msg["data"]["prompt_id"])
        if msg["type"] == "execution_error":
            raise RuntimeError(msg["data"].get("exception_message"))
    return time.perf_counter() - started


async def latencies(session: aiohttp.ClientSession, ws: Any, url: str, count: int, offset: int) -> list[float]:
    found = []
    for index in range(count):
        found.append(await run_batch(session, ws, url, [math_prompt(offset + index)]))
    return found


async def measure(url: str, workers: int, args: argparse.Namespace) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, url, workers)
        async with session.ws_connect(f"{url}/ws") as ws:
            # Warm every worker: imports and the checkpoint read are not what the queue figures are about.
            await run_batch(session, ws, url, [sd_prompt(10_000 + i) for i in range(max(workers, 1) * 2)])
            sleep_s = await run_batch(session, ws, url, [sleep_prompt(i) for i in range(args.prompts)])
            sd_s = await run_batch(session, ws, url, [sd_prompt(i) for i in range(args.prompts)])
            lat = await latencies(session, ws, url, args.latency_prompts, offset=0)
    return {"sleep": args.prompts / sleep_s, "sd": args.prompts / sd_s, "latency_ms": statistics.median(lat) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--prompts", type=int, default=16, help="prompts per throughput batch (default 16)")
    parser.add_argument("--latency-prompts", type=int, default=20)
    parser.add_argument("--worker-cpus", type=float, default=0.5,
                        help="CPUs each Ray worker reserves (0.5 lets 4 workers start on 2 cores)")
    args = parser.parse_args()

    from nodegraph_nodes.diffusion.keymap import write_single_file
    from nodegraph_nodes.diffusion.tiny import tiny_sd1

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_single_file(tiny_sd1(0), base / "models" / "checkpoints" / "tiny_sd1.safetensors")
        setups: list[tuple[str, int, list[str]]] = [("local", 1, [])]
        setups += [(f"ray x{n}", n, ["--executor", "ray", "--workers", str(n), "--worker-cpus", str(args.worker_cpus)])
                   for n in args.workers]
        for index, (label, workers, extra) in enumerate(setups):
            server = Server(base / f"run{index}", base / "models", *extra)
            try:
                figures = asyncio.run(measure(server.url, workers, args))
            finally:
                server.stop()
            rows.append((label, figures))
            print(f"{label}: {figures}", file=sys.stderr, flush=True)

    print(f"\n{os.cpu_count()} CPU cores; {args.prompts} prompts per batch; latency = median of "
          f"{args.latency_prompts} sequential trivial prompts")
    print(f"{'executor':<10} {'sleep prompts/s':>16} {'tiny SD prompts/s':>18} {'latency ms':>11}")
    for label, figures in rows:
        print(f"{label:<10} {figures['sleep']:>16.2f} {figures['sd']:>18.2f} {figures['latency_ms']:>11.1f}")


if __name__ == "__main__":
    main()
