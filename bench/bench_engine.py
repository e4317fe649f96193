"""Engine overhead: validate and execute a 500-node utility workflow, per node.

    python bench/bench_engine.py [--nodes 500] [--repeat 5]

Prints the time to validate, to run cold (every node executes) and warm (everything cached), each per node, and the
ratio of engine time to the nodes' own work (which for IntMath is a few microseconds, so this is nearly all overhead).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "nodes")]

from nodegraph.engine import Executor, NodeRegistry, validate_prompt  # noqa: E402


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
    args = parser.parse_args()

    registry = NodeRegistry()
    registry.register_pack("nodegraph_nodes.utility")
    prompt = make_workflow(args.nodes)

    validate_t, cold_t, warm_t = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = validate_prompt(prompt, registry)
        validate_t.append(time.perf_counter() - t0)
        assert result.ok
        executor = Executor()
        t0 = time.perf_counter()
        run = asyncio.run(executor.run(result.workflow, "bench"))
        cold_t.append(time.perf_counter() - t0)
        assert run.ok and len(run.executed) == args.nodes
        node_work = sum(run.timings.values())
        t0 = time.perf_counter()
        run = asyncio.run(executor.run(result.workflow, "bench-warm"))
        warm_t.append(time.perf_counter() - t0)
        assert run.ok and not run.executed
        executor.close()

    n = args.nodes
    med = statistics.median
    print(f"workflow: {n} nodes, median of {args.repeat} runs")
    print(f"validate:            {med(validate_t) * 1e3:8.2f} ms  ({med(validate_t) / n * 1e6:7.1f} us/node)")
    print(f"execute, cold:       {med(cold_t) * 1e3:8.2f} ms  ({med(cold_t) / n * 1e6:7.1f} us/node)")
    print(f"execute, all cached: {med(warm_t) * 1e3:8.2f} ms  ({med(warm_t) / n * 1e6:7.1f} us/node)")
    print(f"node work inside the cold run (last run): {node_work * 1e3:.2f} ms")
    print(f"engine overhead per executed node: {(med(cold_t) - node_work) / n * 1e6:.1f} us")


if __name__ == "__main__":
    main()
