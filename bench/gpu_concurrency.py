"""The issue's GPU table in one run: prompts per second with 1..16 clients, one prompt at a time vs `--concurrency`
with batched UNet forwards, for SD1.5 at 512x512 and SDXL base at 1024x1024 (random weights, fp16), each through a
real server on loopback (bench_concurrency.py's table, once per model).

    python bench/gpu_concurrency.py                         # a CUDA GPU: ~10 min on one H200
    python bench/gpu_concurrency.py --json $OUT/gpu.json    # also write the figures as JSON
    python bench/gpu_concurrency.py --device cpu --dry      # the same path, small, on a CPU (~1 min)

`--dry` runs the demo SD1 at 64x64 with 1 and 2 clients and 2 steps: a check that the script works before a GPU's
minutes are spent on it. Exits non-zero if a concurrent run's image differs from the one-at-a-time run's by more than
1/255 on a pixel (batched must equal alone), or when asked for CUDA without a CUDA device.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_concurrency  # noqa: E402

# (--model of bench_concurrency, image size): the GPU table
TABLES = [("real-size", 512), ("real-size-sdxl", 1024)]
DRY_TABLES = [("demo", 64)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_concurrency.add_arguments(parser)
    parser.set_defaults(device="cuda", precision="fp16", prompts=1)
    parser.add_argument("--dry", action="store_true", help="small: demo SD1, 64x64, 1-2 clients, 2 steps")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (use --device cpu --dry to check the script)")
        return 2
    tables = TABLES
    if args.dry:
        tables, args.clients, args.steps = DRY_TABLES, "1,2", 2
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(args.device)}, torch {torch.__version__}", flush=True)
    results, failures = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for model, size in tables:
            started = time.perf_counter()
            rows = bench_concurrency.run_table(model, size, args, models_root=Path(tmp) / "models")
            print(f"({model} at {size}: {time.perf_counter() - started:.0f} s)\n", flush=True)
            results[f"{model}@{size}"] = rows
            failures += [f"{model}@{size}, {r['clients']} clients: images differ by {r['max_pixel_diff']}/255"
                         for r in rows if r["max_pixel_diff"] > 1]
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "precision": args.precision, "steps": args.steps,
                                         "prompts": args.prompts, "tables": results}, indent=1))
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
