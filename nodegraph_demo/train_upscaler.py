"""Train the demo upscale model: a small ESRGAN generator (nodegraph_testmodels.upscale.TinyRRDBNet, ~0.3 M parameters) that
learns to undo a 4x (or 2x) area downscale of the demo data set's pictures (64x64 shapes on grey).

The shipped one is `demo_models/upscale_models/nodegraph-demo-esrgan-4x.safetensors` (fp32, 1.2 MB), in the key
layout of Real-ESRGAN's published files, so it takes the same loading path (spandrel) as any user's upscale model.
Trained for minutes on a CPU it is barely better than nearest-neighbour upscaling and worse than bicubic; the
figures are printed at the end and recorded, with the commands, in demo_models/README.md.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nodegraph_testmodels.upscale import TinyRRDBNet

from .dataset import images_and_captions

FILE = "upscale_models/nodegraph-demo-esrgan-2x.safetensors"
CROP = 32  # training crops of the 64x64 pictures (high-resolution side)


def _pairs(start: int, count: int, split: str, scale: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(low-resolution 64/scale, high-resolution 64x64) images in 0..1."""
    images, _ = images_and_captions(start, count, split)
    high = (torch.from_numpy(images) + 1) / 2
    return F.interpolate(high, scale_factor=1 / scale, mode="area"), high


def nearest_init(model: TinyRRDBNet) -> None:
    """Start a scale-4 model (no pixel unshuffle) as exact nearest-neighbour upscaling: the first, upsampling, HR
    and last convolutions pass the RGB channels through (images are >= 0, so the LeakyReLUs pass them unchanged)
    and the trunk's output conv is zero. Training then only has to learn the refinement."""
    if model.unshuffle != 1:
        raise ValueError("nearest_init is for scale-4 models")
    with torch.no_grad():
        for conv in (model.conv_first, model.conv_up1, model.conv_up2, model.conv_hr, model.conv_last):
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(min(conv.in_channels, conv.out_channels)):
                conv.weight[c, c, 1, 1] = 1.0
        model.conv_body.weight.zero_()
        model.conv_body.bias.zero_()


def _crops(high: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random size x size crop (even offsets, so the 2x downscale stays aligned) of each image."""
    out = []
    for image in high:
        top, left = (torch.randint(0, (image.shape[-1] - size) // 2 + 1, (2,), generator=generator) * 2).tolist()
        out.append(image[:, top : top + size, left : left + size])
    return torch.stack(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * math.log10(1.0 / F.mse_loss(a.clamp(0, 1), b).item()))


def train(out: Path, steps: int, batch: int, seed: int, threads: int, lr: float = 2e-3,
          init: Path | None = None, scale: int = 2) -> dict[str, float]:
    """`init`: continue from a saved model file (a second round at a lower learning rate). Scale 4 starts from
    nearest-neighbour upscaling (nearest_init)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = TinyRRDBNet(scale=scale)
    if scale == 4:
        nearest_init(model)
    if init is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(init)))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps, eta_min=1e-5)
    low_val, high_val = _pairs(0, 64, "held_out", scale)
    generator = torch.Generator().manual_seed(seed)
    started = time.time()
    for step in range(steps):
        _, full = _pairs(seed * 1_000_000 + step * batch, batch, "train")
        high = _crops(full, CROP, generator)  # crops: a quarter of the work per sample, the same local statistics
        low = F.interpolate(high, scale_factor=1 / scale, mode="area")
        loss = F.l1_loss(model(low), high)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            with torch.no_grad():
                val = psnr(model(low_val), high_val)
            print(f"step {step}: l1 {loss.item():.4f}, held-out PSNR {val:.2f} dB ({time.time() - started:.0f} s)")
    model.eval()
    with torch.no_grad():
        figures = {
            "model_psnr": psnr(model(low_val), high_val),
            "bicubic_psnr": psnr(F.interpolate(low_val, scale_factor=scale, mode="bicubic"), high_val),
            "nearest_psnr": psnr(F.interpolate(low_val, scale_factor=scale, mode="nearest"), high_val),
            "seconds": time.time() - started,
        }
    from safetensors.torch import save_file

    path = out / (FILE if scale == 2 else FILE.replace("-2x", f"-{scale}x"))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"nodegraph.about": "demo 2x ESRGAN for the nodegraph demo pictures; see demo_models/README.md"})
    print({k: round(v, 2) for k, v in figures.items()})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_models"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--init", type=Path, default=None, help="continue from this model file")
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4))
    args = parser.parse_args()
    train(args.out, args.steps, args.batch, args.seed, args.threads, args.lr, args.init, args.scale)


if __name__ == "__main__":
    main()
