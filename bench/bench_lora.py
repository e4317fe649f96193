"""LoRA patching cost: applying a LoRA to a cached model and restoring it, against loading that model's checkpoint.

    python bench/bench_lora.py [--repeats 5] [--threads 1]

LoRAs are applied while a node uses the model and undone afterwards (patching.py), so every sampling or encoding
run with a LoRA pays one patch + unpatch; a design that instead reloaded or copied the base per LoRA would pay a
checkpoint load. For each model (the tiny SD1 and the shipped demo SD1), with a LoRA on every attention, feed-forward,
resnet-conv and text-encoder projection layer the tiny-LoRA writer covers, this prints the median time of
`read_checkpoint_file` (the whole file: UNet, VAE, text encoder), of patch + unpatch (UNet and text encoder), and their
ratio, all in this process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes")]

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from timing import synced_time  # noqa: E402
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file  # noqa: E402
from nodegraph_testmodels.files import make_tiny_models  # noqa: E402
from nodegraph_nodes.diffusion.lora import read_lora_file  # noqa: E402
from nodegraph_nodes.diffusion.patching import apply, restore  # noqa: E402
from nodegraph_testmodels.lora import kohya_state_dict  # noqa: E402


def median(fn, repeats: int) -> float:
    return statistics.median(synced_time(fn) for _ in range(repeats))


def bench(name: str, checkpoint: Path, tmp: Path, repeats: int) -> None:
    components = read_checkpoint_file(checkpoint, dtype=torch.float32)
    lora_path = tmp / f"{name}_lora.safetensors"
    save_file(kohya_state_dict(components, seed=1), str(lora_path))
    lora = read_lora_file(lora_path)
    models = {"unet": components.unet, "l": components.text_encoders[0]}

    def patch_unpatch() -> None:
        restore(models, apply(models, [(lora, 1.0)]))

    load = median(lambda: read_checkpoint_file(checkpoint, dtype=torch.float32), repeats)
    patch = median(patch_unpatch, repeats)
    params = sum(p.numel() for m in components.models() for p in m.parameters())
    print(f"{name:>10}  {params / 1e6:6.2f} M  {len(lora.adapters):>6}  {load * 1e3:9.1f} ms  {patch * 1e3:9.1f} ms"
          f"  {patch / load:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_tiny_models(tmp / "models")
        print(f"{'model':>10}  {'params':>8}  {'layers':>6}  {'load ckpt':>12}  {'patch+unpatch':>12}  {'ratio':>6}")
        bench("tiny sd1", tmp / "models" / "checkpoints" / "tiny_sd1.safetensors", tmp, args.repeats)
        bench("demo sd1", ROOT / "demo_models" / "checkpoints" / "nodegraph-demo-sd1.safetensors", tmp, args.repeats)


if __name__ == "__main__":
    main()
