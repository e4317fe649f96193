"""A small ESRGAN generator (RRDBNet, in the key layout of Real-ESRGAN's published files) for tests and the demo.

The architecture is ESRGAN's (Wang et al., 2018) as Real-ESRGAN ships it: a first conv, residual-in-residual dense
blocks (three 5-conv dense blocks each, residuals scaled by 0.2), a trunk conv, two nearest x2 upsampling convs, an
HR conv and a last conv, LeakyReLU 0.2 between. Scale 2 (and 1) models take the image pixel-unshuffled (x2 or x4),
so their first conv has 12 (48) input channels: that is how spandrel, like ComfyUI, recognises their scale.
Dense blocks grow by 32 channels, the count spandrel assumes for this layout.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

GROWTH_CHANNELS = 32  # spandrel reads every other size from the file, but assumes this one


class _DenseBlock(nn.Module):
    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, growth, 3, 1, 1)
        self.conv2 = nn.Conv2d(features + growth, growth, 3, 1, 1)
        self.conv3 = nn.Conv2d(features + 2 * growth, growth, 3, 1, 1)
        self.conv4 = nn.Conv2d(features + 3 * growth, growth, 3, 1, 1)
        self.conv5 = nn.Conv2d(features + 4 * growth, features, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            outputs.append(F.leaky_relu(conv(torch.cat(outputs, 1)), 0.2))
        return self.conv5(torch.cat(outputs, 1)) * 0.2 + x


class _ResidualInResidual(nn.Module):
    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = _DenseBlock(features, growth)
        self.rdb2 = _DenseBlock(features, growth)
        self.rdb3 = _DenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class TinyRRDBNet(nn.Module):
    """ESRGAN's generator: IMAGE-like [B, 3, H, W] in 0..1 -> [B, 3, H * scale, W * scale]."""

    def __init__(self, scale: int = 4, features: int = 16, blocks: int = 1, growth: int = GROWTH_CHANNELS) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"scale {scale}: this layout has scales 1, 2 and 4")
        self.scale = scale
        self.unshuffle = {1: 4, 2: 2, 4: 1}[scale]
        self.conv_first = nn.Conv2d(3 * self.unshuffle**2, features, 3, 1, 1)
        self.body = nn.Sequential(*[_ResidualInResidual(features, growth) for _ in range(blocks)])
        self.conv_body = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_hr = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def tiny_esrgan(seed: int = 0, scale: int = 4) -> TinyRRDBNet:
    """A random-weight TinyRRDBNet (16 features, 1 block: ~0.3 M parameters); the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyRRDBNet(scale=scale).eval()


def write_esrgan_files(model: TinyRRDBNet, folder: Path, name: str) -> dict[str, Path]:
    """The model as `<name>.safetensors` and as `<name>.pth` the way Real-ESRGAN publishes it (a torch.save pickle of
    {"params_ema": state_dict})."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"{name}.safetensors"))
    torch.save({"params_ema": state}, folder / f"{name}.pth")
    return {name: folder / f"{name}.safetensors", name + "_pth": folder / f"{name}.pth"}
