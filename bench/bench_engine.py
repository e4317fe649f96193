"""Engine overhead: validate and execute a 500-node utility workflow, per node; and how it scales to 10,000 nodes.

    python bench/bench_engine.py [--nodes 500] [--repeat 5] [--scaling 1000,10000]

Prints the time to validate, to run cold (every node executes) and warm (everything cached), each per node, and the
ratio of engine time to the nodes' own work (which for IntMath is a few microseconds, so this is nearly all overhead).

Then the scaling case: a chain of 1,000 and of 10,000 nodes, run by the engine alone and through the real server
(an in-process aiohttp app with one websocket client reading every message), per node, and the ratio of the
per-node times (1.0 = linear; a graph whose cost grows with the square of its size shows about 10).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes"), str(ROOT / "tests")]

from nodegraph.engine import Executor, NodeRegistry  # noqa: E402
from nodegraph.run_once import PromptRunner  # noqa: E402
from support.registry import make_registry  # noqa: E402
from support.workflows import chain  # noqa: E402


def make_workflow(n: int) -> dict:
    """A chain of IntMath nodes with side branches: every node has one or two inputs, one ShowText at the end."""
    prompt = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        b = ["0", 0] if i % 7 else [str(i // 2), 0]
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "op": "max", "b": b}}
    prompt[str(n - 1)] = {"class_type": "ShowText", "inputs": {"value": [str(n - 2), 0]}}
    return prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scaling", default="1000,10000", help="chain sizes for the scaling case (first = base)")
    args = parser.parse_args()

    registry = make_registry(builtin=False, packs={"nodegraph_nodes.utility": None})
    prompt = make_workflow(args.nodes)

    validate_t, cold_t, warm_t = [], [], []
    for _ in range(args.repeat):
        runner = PromptRunner(registry=registry, executor=Executor())
        t0 = time.perf_counter()
        result = runner.validate(prompt)
        validate_t.append(time.perf_counter() - t0)
        assert result.ok
        t0 = time.perf_counter()
        run = runner.run(result, "bench")
        cold_t.append(time.perf_counter() - t0)
        assert run.ok and len(run.executed) == args.nodes
        node_work = sum(run.timings.values())
        t0 = time.perf_counter()
        run = runner.run(result, "bench-warm")
        warm_t.append(time.perf_counter() - t0)
        assert run.ok and not run.executed
        runner.executor.close()

    n = args.nodes
    med = statistics.median
    print(f"workflow: {n} nodes, median of {args.repeat} runs")
    print(f"validate:            {med(validate_t) * 1e3:8.2f} ms  ({med(validate_t) / n * 1e6:7.1f} us/node)")
    print(f"execute, cold:       {med(cold_t) * 1e3:8.2f} ms  ({med(cold_t) / n * 1e6:7.1f} us/node)")
    print(f"execute, all cached: {med(warm_t) * 1e3:8.2f} ms  ({med(warm_t) / n * 1e6:7.1f} us/node)")
    print(f"node work inside the cold run (last run): {node_work * 1e3:.2f} ms")
    print(f"engine overhead per executed node: {(med(cold_t) - node_work) / n * 1e6:.1f} us")
    scaling([int(x) for x in args.scaling.split(",")])


def engine_chain(registry: NodeRegistry, n: int) -> float:
    prompt = chain(n)
    started = time.perf_counter()
    runner = PromptRunner(registry=registry, executor=Executor())
    run = runner.run(prompt, "chain")
    runner.executor.close()
    assert run.ok and len(run.executed) == n
    return time.perf_counter() - started


async def _server_chain(n: int, base: Path) -> tuple[float, int]:
    from aiohttp.test_utils import TestClient, TestServer

    from nodegraph.engine import Folders
    from nodegraph.server import ServerConfig, create_app

    config = ServerConfig(folders=Folders(models_dirs=[base / "models"], input_dir=base / "input",
                                          output_dir=base / "output", temp_dir=base / "temp"),
                          data_dir=base / "data")
    async with TestClient(TestServer(create_app(config))) as client:
        ws = await client.ws_connect("/ws?clientId=bench")
        started = time.perf_counter()
        response = await client.post("/api/prompt", json={"prompt": chain(n), "client_id": "bench"})
        assert response.status == 200, await response.text()
        received = 0
        while True:
            message = await ws.receive()
            received += len(message.data)
            data = json.loads(message.data)
            if data["type"] == "executing" and data["data"]["node"] is None:
                break
        elapsed = time.perf_counter() - started
        await ws.close()
    return elapsed, received


def server_chain(n: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(_server_chain(n, Path(folder)))


def scaling(sizes: list[int]) -> None:
    registry = make_registry(builtin=False, packs={"nodegraph_nodes.utility": None})
    print(f"\nscaling: a chain of Int Math nodes, {' and '.join(f'{n:,}' for n in sizes)} nodes")
    engine = {n: engine_chain(registry, n) for n in sizes}
    server = {n: server_chain(n) for n in sizes}
    for n in sizes:
        print(f"  {n:>6,} nodes: engine {engine[n] / n * 1e6:7.1f} us/node; server {server[n][0] / n * 1e6:7.1f} "
              f"us/node, {server[n][1] / n:6.0f} websocket bytes/node")
    small, large = sizes[0], sizes[-1]
    print(f"  per-node ratio {large:,} / {small:,}: engine {engine[large] / large / (engine[small] / small):.2f}, "
          f"server {server[large][0] / large / (server[small][0] / small):.2f} (1.0 = linear)")


if __name__ == "__main__":
    main()
