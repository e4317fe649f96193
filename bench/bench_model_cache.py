"""Model cache: the second run of a workflow with the same checkpoint spends no time loading.

    python bench/bench_model_cache.py [--runs 3]

Runs the txt2img workflow on the tiny SD1 checkpoint several times with the OUTPUT cache disabled (so every node
executes each time) and prints, per run, the LoadCheckpoint node's time, the whole run's time and the number of
checkpoint file reads. Only the first run should read the file.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes"), str(ROOT / "tests")]

from nodegraph.engine import Executor, NullCache  # noqa: E402
from nodegraph.run_once import PromptRunner  # noqa: E402
from nodegraph_testmodels.files import make_tiny_models  # noqa: E402
from nodegraph_nodes.diffusion.cache_readers import model_cache  # noqa: E402
from support.sd import make_folders  # noqa: E402
from support.workflows import txt2img  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tiny_models(root / "models")
        folders = make_folders(root, root / "models")
        runner = PromptRunner(folders, executor=Executor(folders, cache=NullCache(), previews=False))
        workflow = runner.validate(txt2img())
        cache = model_cache(runner.executor.runtime)
        print(f"{'run':>3}  {'LoadCheckpoint':>14}  {'whole run':>9}  {'file reads':>10}")
        for run in range(1, args.runs + 1):
            started = time.perf_counter()
            result = runner.run(workflow, f"bench-{run}")
            total = time.perf_counter() - started
            assert result.ok, result.error
            print(f"{run:>3}  {result.timings['4'] * 1e3:>11.1f} ms  {total:>7.2f} s  {cache.stats()['file_reads']:>10}")
        runner.executor.close()


if __name__ == "__main__":
    main()
