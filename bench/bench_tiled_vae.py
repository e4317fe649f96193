"""Tiled VAE: peak memory and time of VAEDecodeTiled / VAEEncodeTiled against the untiled VAE.

    python bench/bench_tiled_vae.py [--size 512] [--tile 128]

Each measurement runs in a fresh subprocess (the demo VAE, one size x size picture) and reports the growth of the
process's peak resident memory (ru_maxrss) during the VAE call, so activations are what is measured; the ratios
tiled / untiled are printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import torch
sys.path[:0] = [{root!r}, {root!r} + "/nodes"]
from pathlib import Path
from nodegraph.engine import Folders, NodeContext, Runtime
from nodegraph_nodes.diffusion import ops
from nodegraph_nodes.core import latents as lt
torch.set_num_threads(1)
runtime = Runtime(Folders(settings={{"device": "cpu"}}))
vae = ops.load_vae(runtime, Path({root!r}) / "demo_models/vae/nodegraph-demo-vae.safetensors")
size, tile, mode = {size}, {tile}, {mode!r}
torch.manual_seed(0)
latent = torch.randn(1, 4, size // 8, size // 8)
pixels = torch.rand(1, size, size, 3)
ops.vae_decode(runtime, vae, latent[:, :, :8, :8])  # warm up: weights loaded, allocator primed
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "decode":
    ops.vae_decode(runtime, vae, latent)
elif mode == "decode_tiled":
    node = lt.VAEDecodeTiled()
    node.context = NodeContext(node_id="1", prompt_id="bench", runtime=runtime)
    node.execute({{"samples": latent}}, vae, tile, tile // 4)
elif mode == "encode":
    ops.vae_encode(runtime, vae, pixels)
else:
    node = lt.VAEEncodeTiled()
    node.context = NodeContext(node_id="1", prompt_id="bench", runtime=runtime)
    node.execute(pixels, vae, tile, tile // 4)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_growth_mb": (after - before) / 1024, "seconds": seconds}}))
"""


def measure(mode: str, size: int, tile: int) -> dict:
    code = CHILD.format(root=str(ROOT), size=size, tile=tile, mode=mode)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=128)
    args = parser.parse_args()
    for kind in ("decode", "encode"):
        plain = measure(kind, args.size, args.tile)
        tiled = measure(f"{kind}_tiled", args.size, args.tile)
        print(f"{kind} {args.size}x{args.size}, tile {args.tile}: peak growth untiled {plain['peak_growth_mb']:.0f} MB, "
              f"tiled {tiled['peak_growth_mb']:.0f} MB (ratio {tiled['peak_growth_mb'] / max(plain['peak_growth_mb'], 1e-9):.2f}); "
              f"time untiled {plain['seconds']:.2f} s, tiled {tiled['seconds']:.2f} s "
              f"(ratio {tiled['seconds'] / plain['seconds']:.2f})")


if __name__ == "__main__":
    main()
