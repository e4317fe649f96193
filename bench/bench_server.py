"""Server throughput and latency: prompts/s and POST -> execution_success latency with N concurrent websocket clients.

Starts `python -m nodegraph serve --port 0` on temporary folders, then each client connects over the websocket,
and in a loop POSTs a prompt with its client_id and waits for that prompt's `execution_success`. Two workloads:

- cached: the same small utility workflow every time (after the first run every node is a cache hit);
- utility: the same graph with a literal changed each time, so three nodes execute.

    python bench/bench_server.py --clients 4 --prompts 50
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "nodes"), str(ROOT / "tests")]

from support.server import ServeProcess  # noqa: E402


def workflow(value: int) -> dict:
    return {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": value}},
        "2": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
        "3": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "op": "add", "b": ["2", 0]}},
        "4": {"class_type": "ShowText", "inputs": {"value": ["3", 0]}},
    }


async def client_loop(session: aiohttp.ClientSession, url: str, index: int, prompts: int, cached: bool,
                      latencies: list[float]) -> None:
    async with session.ws_connect(f"{url}/ws") as ws:
        sid = (await ws.receive_json())["data"]["sid"]
        for n in range(prompts):
            value = 1 if cached else index * 1_000_000 + n + 2  # +2: never equal to the cached literal
            started = time.perf_counter()
            async with session.post(f"{url}/api/prompt", json={"prompt": workflow(value), "client_id": sid}) as r:
                prompt_id = (await r.json())["prompt_id"]
            while True:
                message = await ws.receive_json()
                if message["type"] == "execution_success" and message["data"]["prompt_id"] == prompt_id:
                    latencies.append(time.perf_counter() - started)
                    break


async def run_workload(url: str, clients: int, prompts: int, cached: bool) -> dict[str, float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        if cached:  # warm the cache so every timed prompt is a full hit
            await client_loop(session, url, 0, 1, True, [])
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(session, url, i, prompts, cached, latencies) for i in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "prompts": len(latencies),
        "prompts_per_s": len(latencies) / elapsed,
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
    }


def start_server(base: Path) -> tuple[subprocess.Popen, str]:
    served = ServeProcess(base)
    return served.proc, served.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="concurrent websocket clients (default 4)")
    parser.add_argument("--prompts", type=int, default=50, help="prompts per client (default 50)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            for name, cached in (("cached", True), ("utility", False)):
                r = asyncio.run(run_workload(url, args.clients, args.prompts, cached))
                print(f"{name:8s} clients={args.clients} prompts={r['prompts']:.0f}  "
                      f"{r['prompts_per_s']:.1f} prompts/s  median {r['median_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
