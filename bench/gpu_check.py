"""The model cache on an accelerator: tiny SD1 and SDXL workflows in fp16, placement and budget eviction.

    python bench/gpu_check.py [--device cuda] [--precision fp16]

Meant for a machine with a GPU (the project's CI has none); with --device cpu it checks the same logic on the CPU.
Prints what is placed where, the budget's evictions, and timings; exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes"), str(ROOT / "tests")]

import torch  # noqa: E402

from nodegraph.engine import Executor, NullCache  # noqa: E402
from nodegraph.run_once import PromptRunner  # noqa: E402
from nodegraph_testmodels.files import make_tiny_models  # noqa: E402
from nodegraph_nodes.diffusion.cache_readers import model_cache  # noqa: E402
from support.sd import make_folders  # noqa: E402
from support.workflows import txt2img  # noqa: E402


def run(runner: PromptRunner, prompt):
    result = runner.validate(prompt)
    assert result.ok, result.node_errors
    started = time.perf_counter()
    out = runner.run(result, "check")
    assert out.ok, out.error
    return out, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="fp16")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (use --device cpu for the CPU path)")
        return 2
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tiny_models(root / "models")
        folders = make_folders(root, root / "models")
        folders.settings = {"device": args.device, "precision": args.precision}
        runner = PromptRunner(folders, executor=Executor(folders, cache=NullCache(), previews=False))
        cache = model_cache(runner.executor.runtime)
        print(f"device {cache.device}, dtype {cache.dtype}, vram budget {cache.vram_budget >> 20} MiB")

        sdxl = txt2img(**{"4.ckpt_name": "tiny_sdxl.safetensors"})
        for name, prompt in (("sd1", txt2img()), ("sdxl", sdxl), ("sd1 again", txt2img(**{"3.seed": 3}))):
            out, seconds = run(runner, prompt)
            image = out.values["8"][0]
            placed = {(e["file"], e["component"]): e["device"] for e in cache.stats()["loaded"]}
            print(f"{name:10s} {seconds:6.2f} s  image {tuple(image.shape)} finite={bool(torch.isfinite(image).all())}")
            print(f"           placed: {placed}")
            if not torch.isfinite(image).all():
                failures.append(f"{name}: non-finite image")
        unet = next(e for e in cache.stats()["loaded"] if e["component"] == "unet")
        if cache.device.type != "cpu" and unet["device"] == "cpu" and unet["file"] == "tiny_sd1.safetensors":
            failures.append("the UNet last used is not on the device")
        print(f"counters: { {k: cache.stats()[k] for k in ('file_reads', 'hits', 'misses', 'offloads', 'drops')} }")

        # A budget smaller than two UNets: using the second must move the first off the device.
        if cache.device.type != "cpu":
            sizes = {e["file"]: e["bytes"] for e in cache.stats()["loaded"] if e["component"] == "unet"}
            cache.vram_budget = int(max(sizes.values()) * 1.5)
            before = cache.stats()["offloads"]
            run(runner, sdxl)
            run(runner, txt2img(**{"3.seed": 4}))
            offloads = cache.stats()["offloads"] - before
            on_device = [e for e in cache.stats()["loaded"] if e["device"] != "cpu"]
            print(f"budget {cache.vram_budget >> 10} KiB: {offloads} offloads; on device now: "
                  f"{[(e['file'], e['component']) for e in on_device]}")
            if offloads == 0:
                failures.append("no offload under a budget smaller than two UNets")
            if sum(e["bytes"] for e in on_device) > cache.vram_budget + max(sizes.values()):
                failures.append("more on the device than the budget allows")
        runner.executor.close()
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
