"""Train the demo LoRA: "giant" shapes, a style the demo SD1 model cannot draw, as a kohya-format LoRA file.

The demo SD1 model only ever saw objects 22-30 px wide (`dataset.SIZE_RANGE`); this LoRA teaches it to draw the
same coloured shapes 42-50 px wide, in the middle of the picture, for the same prompts ("a red circle"): a style
LoRA, no trigger word. Checked by `lora_concept.is_giant` (the main object's bounding box is at least
`GIANT_MIN_SIDE` px; the base model's never are).

Why size and not a new colour: the demo VAE was trained on four colours and decodes every other hue as one of them
(purple comes back green, orange yellow), and a LoRA does not touch the VAE; shapes of any size survive it.

Method: low-rank adapters (rank `RANK`, alpha = rank) on the UNet's attention projections (to_q, to_k, to_v,
to_out.0, proj_in, proj_out) and on its resnet convolutions (LoCon: conv1, conv2 as k x k down, 1 x 1 up), the
base weights frozen; DDPM noise-prediction loss on latents of freshly drawn giant shapes, captions dropped 10% of
the time; then written the way kohya's sd-scripts writes SD1 LoRAs (`lora_unet_<diffusers module path with _>`,
`lora_down.weight`, `lora_up.weight`, `alpha`), so it takes the same loading path as a downloaded LoRA.

    python -m nodegraph_demo.train_lora --out demo_models   # ~6 minutes on one CPU thread
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import save_file

from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file

from . import lora_concept
from .train import RunningMean, encode_images, warmup_cosine

BASE = "checkpoints/nodegraph-demo-sd1.safetensors"
LORA_NAME = "loras/nodegraph-demo-giant.safetensors"
RANK = 8
LINEAR_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out")
CONV_TARGETS = ("conv1", "conv2")


@dataclass
class LoraTrainConfig:
    seed: int = 0
    images: int = 2048
    steps: int = 1500
    batch: int = 24
    lr: float = 2e-3
    caption_dropout: float = 0.1
    threads: int = 1
    log_every: int = 100


class Adapter(torch.nn.Module):
    """down -> up, added to a frozen layer's output (LoRA for Linear, LoCon for Conv2d)."""

    def __init__(self, layer: torch.nn.Module, rank: int) -> None:
        super().__init__()
        if isinstance(layer, torch.nn.Conv2d):
            self.down = torch.nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding,
                                        bias=False)
            self.up = torch.nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        else:
            self.down = torch.nn.Linear(layer.in_features, rank, bias=False)
            self.up = torch.nn.Linear(rank, layer.out_features, bias=False)
        torch.nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        torch.nn.init.zeros_(self.up.weight)  # starts as the base model exactly

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def attach_adapters(unet: torch.nn.Module, rank: int) -> dict[str, Adapter]:
    """An adapter per target layer, added through forward hooks; module path -> adapter."""
    adapters: dict[str, Adapter] = {}
    for name, module in unet.named_modules():
        linear = isinstance(module, torch.nn.Linear) and name.endswith(LINEAR_TARGETS)
        conv = isinstance(module, torch.nn.Conv2d) and ".resnets." in name and name.endswith(CONV_TARGETS)
        if not (linear or conv):
            continue
        adapter = Adapter(module, rank)
        adapters[name] = adapter
        module.register_forward_hook(lambda _m, args, out, a=adapter: out + a(args[0]))
    return adapters


def kohya_state_dict(adapters: dict[str, Adapter], rank: int) -> dict[str, torch.Tensor]:
    """sd-scripts' SD1 naming: the diffusers module path with '_' for '.', under lora_unet_; alpha = rank."""
    out: dict[str, torch.Tensor] = {}
    for path, adapter in adapters.items():
        key = "lora_unet_" + path.replace(".", "_")
        out[f"{key}.lora_down.weight"] = adapter.down.weight.detach().to(torch.float16).contiguous()
        out[f"{key}.lora_up.weight"] = adapter.up.weight.detach().to(torch.float16).contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(rank), dtype=torch.float16)
    return out


def train(config: LoraTrainConfig, models: Path, log=print) -> Path:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    base = read_checkpoint_file(models / BASE, dtype=torch.float32)
    unet, vae = base.unet.requires_grad_(False), base.vae.requires_grad_(False)
    encoder, tokenizer = base.text_encoders[0].requires_grad_(False), base.tokenizers[0]

    start = time.perf_counter()
    images, captions = lora_concept.giant_images_and_captions(0, config.images)
    mean, std = encode_images(vae, images)
    scale = vae.config.scaling_factor
    mean, std = mean * scale, std * scale
    prompts = sorted(set(captions)) + [""]
    with torch.no_grad():
        ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
        contexts = encoder(ids).last_hidden_state  # SD1: the last layer after the final layer norm
    caption_index = torch.tensor([prompts.index(c) for c in captions])
    log(f"encoded {config.images} giant-shape images in {time.perf_counter() - start:.1f}s")

    adapters = attach_adapters(unet, RANK)
    params = [p for a in adapters.values() for p in a.parameters()]
    log(f"{len(adapters)} adapters, {sum(p.numel() for p in params)} parameters")
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    schedule = warmup_cosine(optimiser, config.steps)
    scheduler = DDPMScheduler.from_config(base.scheduler_config)
    generator = torch.Generator().manual_seed(config.seed)
    running = RunningMean()
    start = time.perf_counter()
    for step in range(config.steps):
        index = torch.randint(len(captions), (config.batch,), generator=generator)
        x0 = mean[index] + std[index] * torch.randn(mean[index].shape, generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(scheduler.config.num_train_timesteps, (config.batch,), generator=generator)
        which = caption_index[index]
        dropped = torch.rand(config.batch, generator=generator) < config.caption_dropout
        context = contexts[torch.where(dropped, len(prompts) - 1, which)]
        pred = unet(scheduler.add_noise(x0, noise, t), t, context).sample
        loss = F.mse_loss(pred, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running.add(loss.item())
        if (step + 1) % config.log_every == 0 or step == 0:
            log(f"lora step {step + 1}/{config.steps} loss {running.take():.4f} ({time.perf_counter() - start:.0f}s)")
    path = models / LORA_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya_state_dict(adapters, RANK), str(path),
              metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(RANK),
                        "ss_network_alpha": str(RANK), "nodegraph.trained_on": BASE})
    log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the demo 'giant shapes' LoRA for the demo SD1 model.")
    parser.add_argument("--out", type=Path, default=Path("demo_models"), help="models root holding the demo SD1")
    for f in fields(LoraTrainConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    config = LoraTrainConfig(**{f.name: getattr(args, f.name) for f in fields(LoraTrainConfig)})
    print(f"training the demo LoRA with {config}", flush=True)
    train(config, args.out, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
