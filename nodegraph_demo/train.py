"""Train the shipped demo models on `dataset.py`'s shapes, on a CPU, from a fixed seed.

Order and method (run `python -m nodegraph_demo.train --help`):
1. a small AutoencoderKL (8x down, 4 latent channels) on the images, then its latent space rescaled so that the
   family's standard scaling factor (0.18215 SD1, 0.13025 SDXL) gives unit-variance latents, as in the real models;
2. the training images are encoded once (posterior mean and std cached), which makes every diffusion step cheap;
3. SD1: a UNet2DConditionModel with cross-attention in every block and a CLIP text encoder (the real CLIP tokenizer
   over its first 4096 ids), trained jointly with the DDPM noise-prediction loss, captions dropped 10% of the time;
4. a ControlNet made from that UNet (`ControlNetModel.from_unet`), trained on Canny edges with the SD1 parts frozen;
5. SDXL base (CLIP-L-like + wider bigG-like encoder with projection, text_time size conditioning) and the SDXL
   refiner (bigG-like encoder only, aesthetic-score conditioning), trained the same way;
6. everything written as original-layout single files with `keymap.write_single_file` / `write_controlnet_file`.

How each family feeds text to its UNet (which hidden layer, pooled output, size numbers) is read from `families.py`,
the same data the inference code uses, so training and sampling cannot disagree.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel, compute_snr

from nodegraph_nodes.diffusion.checkpoint_files import read_vae_file
from nodegraph_nodes.diffusion.families import FAMILIES, Family, bundled_config
from nodegraph_nodes.diffusion.image_ops import canny_edges
from nodegraph_nodes.diffusion.keymap import write_controlnet_file, write_single_file, write_vae_file
from nodegraph_nodes.diffusion.preview import LatentRgb, fit_latent_rgb
from nodegraph_nodes.diffusion.tiny import Components, build_text_encoder, build_unet, build_vae, seeded
from nodegraph_nodes.diffusion.tokenizer import clip_tokenizer

from . import dataset

VOCAB_SIZE = 4096  # the first 3582 CLIP merges: every caption word is tokenised exactly as full CLIP does

DEMO_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    # three downsamplings: the real 8x factor. Narrow: a CPU spends its time on norms and activations over the
    # large maps (narrower still, or batches of 4, left the VAE stuck at blurry blobs)
    "block_out_channels": [16, 32, 32, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": dataset.IMAGE_SIZE,
    "scaling_factor": FAMILIES["sd1"].latent_scale,
}

CLIP_L: dict[str, Any] = {  # CLIP ViT-L-like text tower (768 wide, 12 layers in the real one)
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 64,
}
CLIP_G: dict[str, Any] = {  # OpenCLIP bigG-like (1280 wide in the real one); must differ in width from CLIP_L
    **CLIP_L,
    "hidden_size": 96,
    "intermediate_size": 384,
    "hidden_act": "gelu",
    "projection_dim": 96,
}

SD1_UNET: dict[str, Any] = {
    "sample_size": dataset.IMAGE_SIZE // 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64],  # ~1 M parameters: what two CPU cores can train in a quarter of an hour
    "layers_per_block": 1,
    # cross-attention in every block: with a plain block the tiny model ignores parts of the prompt
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": CLIP_L["hidden_size"],
    "attention_head_dim": [4, 8],  # diffusers' name for the number of heads: 8 channels per head
    # linear rather than 1x1-conv attention projections (as SD2 / SDXL): the same maths, several times faster
    # on a CPU; the checkpoint header records it, so the loader builds the same layers
    "use_linear_projection": True,
}
TIME_EMBED_DIM = 16  # addition_time_embed_dim (256 in the real SDXL)
SDXL_UNET: dict[str, Any] = {
    **SD1_UNET,
    "cross_attention_dim": CLIP_L["hidden_size"] + CLIP_G["hidden_size"],
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TIME_EMBED_DIM,
    "projection_class_embeddings_input_dim": CLIP_G["projection_dim"] + 6 * TIME_EMBED_DIM,
}
REFINER_UNET: dict[str, Any] = {
    **SDXL_UNET,
    "cross_attention_dim": CLIP_G["hidden_size"],
    "projection_class_embeddings_input_dim": CLIP_G["projection_dim"] + 5 * TIME_EMBED_DIM,
}
CONTROLNET_HINT_CHANNELS = (16, 32, 64, 64)  # hint encoder: three stride-2 convs take 64 px edges to the latent grid

SIZE_CHOICES = (64, 128, 256, 512, 1024)  # random size conditioning, so any width/height a workflow passes works


@dataclass
class TrainConfig:
    """Everything that decides the result; the defaults are what made the shipped files."""

    seed: int = 0
    images: int = 6144  # fixed training set, encoded to latents once
    vae_steps: int = 3000
    vae_batch: int = 16
    vae_lr: float = 2e-3
    sd1_steps: int = 6000
    controlnet_steps: int = 2500
    sdxl_steps: int = 4500
    refiner_steps: int = 3000
    batch: int = 24
    lr: float = 1e-3
    caption_dropout: float = 0.1
    # Min-SNR-gamma loss weights (Hang et al. 2023): low-noise steps, which only polish details, stop dominating
    # the gradient, so the steps that decide colour, shape and place get more of a small training budget
    snr_gamma: float = 5.0
    ema_decay: float = 0.999  # the shipped weights are an exponential moving average of the trained ones
    log_every: int = 100
    # one thread per process: on a 2-core machine shared with other jobs, a 2-thread process spent >4 s per SD1
    # step waiting for its second thread, against 0.25 s with one; train SD1 and SDXL in two processes instead
    threads: int = 1


Log = Callable[[str], None]


def demo_components(family: str, seed: int) -> Components:
    """Randomly initialised demo-sized parts of `family` ("sd1", "sdxl", "sdxl_refiner"); the VAE is trained apart."""
    l_tokenizer = clip_tokenizer(VOCAB_SIZE)
    g_tokenizer = clip_tokenizer(VOCAB_SIZE, pad_token="!")  # OpenCLIP pads with "!"
    clip_l = lambda: build_text_encoder(CLIP_L, l_tokenizer, seed + 2)  # noqa: E731
    clip_g = lambda: build_text_encoder(CLIP_G, g_tokenizer, seed + 3, with_projection=True)  # noqa: E731
    parts = {
        "sd1": (SD1_UNET, [clip_l], [l_tokenizer], "sd15"),
        "sdxl": (SDXL_UNET, [clip_l, clip_g], [l_tokenizer, g_tokenizer], "sdxl_base"),
        "sdxl_refiner": (REFINER_UNET, [clip_g], [g_tokenizer], "sdxl_refiner"),
    }
    unet_config, encoders, tokenizers, config_folder = parts[family]
    vae_config = {**DEMO_VAE, "scaling_factor": FAMILIES[family].latent_scale}
    return Components(
        family=family,
        unet=build_unet(unet_config, seed),
        vae=build_vae(vae_config, seed + 1),
        text_encoders=[make() for make in encoders],
        tokenizers=tokenizers,
        scheduler_config=bundled_config(config_folder, "scheduler"),
    )


def warmup_cosine(optimiser: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 5% of steps, then cosine decay to 5% of the peak learning rate."""
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


# --- VAE ------------------------------------------------------------------------------------------------------


OBJECT_WEIGHT = 10.0


def object_weight(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss weight [N, 1, H, W]: OBJECT_WEIGHT on and around saturated (object) pixels, else 1.

    Objects cover about a tenth of an image; with a plain mean the VAE first learns the background and codes the
    object colours on one axis (red and green came out yellow after 800 steps). Weighting the objects makes their
    colour worth as much as the background's.
    """
    rgb = (x + 1) / 2
    high, low = rgb.amax(dim=1, keepdim=True), rgb.amin(dim=1, keepdim=True)
    saturated = ((high - low) / high.clamp_min(1e-3) > 0.3).float()
    # widened by 2 px so that the background just outside an outline counts as much as the object: colour bleeding
    # there is what rounds a small square's corners
    near_object = F.max_pool2d(saturated, kernel_size=5, stride=1, padding=2)
    return 1.0 + (OBJECT_WEIGHT - 1.0) * near_object


def train_vae(config: TrainConfig, log: Log) -> AutoencoderKL:
    """Object-weighted reconstruction (L1 + MSE) plus a tiny KL term, on freshly generated images (none twice).

    Whole images rather than cheaper crops: crops shift the GroupNorm statistics and the mid-block attention
    away from what the VAE sees at inference, which showed as halos around shapes.
    """
    vae = build_vae(DEMO_VAE, config.seed + 1).train()
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    schedule = warmup_cosine(optimiser, config.vae_steps)
    generator = torch.Generator().manual_seed(config.seed)
    running = RunningMean()
    for step in range(config.vae_steps):
        x = torch.from_numpy(dataset.images_and_captions(1_000_000 + step * config.vae_batch, config.vae_batch)[0])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        error = (recon - x).abs() + (recon - x) ** 2
        weight = object_weight(x)
        rec = (weight * error).sum() / (weight.sum() * x.shape[1])
        loss = rec + 1e-6 * posterior.kl().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running.add(rec.item())
        if (step + 1) % config.log_every == 0 or step == 0:
            log(f"vae step {step + 1}/{config.vae_steps} recon loss {running.take():.4f}")
    return vae.eval()


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: np.ndarray, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image (float32 [N, 4, h, w] each), unscaled."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(torch.from_numpy(images[i:i + batch])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def rescaled_vae(vae: AutoencoderKL, latent_std: float, scaling_factor: float) -> AutoencoderKL:
    """A copy of `vae` whose latents are multiplied by c = 1 / (scaling_factor * latent_std), decoding unchanged.

    Real pipelines multiply latents by the family's fixed scaling factor (0.18215 SD1, 0.13025 SDXL) to get unit
    variance; folding c into the 1x1 quant_conv (mean scaled by c, log-variance shifted by 2 ln c) and dividing
    post_quant_conv's input by c makes that standard factor right for our VAE too.
    """
    c = 1.0 / (scaling_factor * latent_std)
    out = copy.deepcopy(vae)
    k = out.config.latent_channels
    with torch.no_grad():
        out.quant_conv.weight[:k] *= c
        out.quant_conv.bias[:k] *= c
        out.quant_conv.bias[k:] += 2 * math.log(c)
        out.post_quant_conv.weight /= c  # weight [out, in, 1, 1]: a linear map of the latent, so 1/c undoes c
    out.register_to_config(scaling_factor=scaling_factor)
    return out


# --- data for the diffusion models ----------------------------------------------------------------------------


@dataclass
class LatentData:
    """The fixed training set as the diffusion models see it: unit-variance latents, captions, Canny edges."""

    mean: torch.Tensor  # [N, 4, 8, 8], already multiplied by the scaling factor
    std: torch.Tensor
    captions: list[str]
    images: np.ndarray  # uint8 [N, H, W, 3], for Canny hints

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Latents drawn from each image's posterior, as SD's training does."""
        mean, std = self.mean[index], self.std[index]
        return mean + std * torch.randn(mean.shape, generator=generator)


def build_latent_data(vae: AutoencoderKL, config: TrainConfig, log: Log) -> LatentData:
    start = time.perf_counter()
    batch = list(dataset.samples(0, config.images))
    images = np.stack([s.image for s in batch])
    pixels = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    mean, std = encode_images(vae, pixels)
    scale = vae.config.scaling_factor
    log(f"encoded {len(batch)} images in {time.perf_counter() - start:.1f}s; scaled latent std "
        f"{float((mean * scale).std()):.3f}")
    return LatentData(mean * scale, std * scale, [s.caption for s in batch], images)


def canny_hint(image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Canny edges of a uint8 RGB image as a float32 [3, H, W] hint in [0, 1] (white edges on black, as ControlNet).

    Made by the Canny node's own function (grey image, ComfyUI's 0..1 thresholds), so the ControlNet is trained on
    what workflows feed it. With `rng` (training) the thresholds vary from 0.05 to 0.25 (high = 2 x low), and a
    quarter of the hints come from OpenCV's Canny on the colour image instead (other tools' edge maps); without
    it, the example workflow's 0.05 / 0.1.
    """
    if rng is not None and rng.random() < 0.25:
        low = int(rng.integers(50, 151))
        edges = cv2.Canny(image, low, 2 * low).astype(np.float32) / 255.0
        return np.repeat(edges[None], 3, axis=0)
    low = float(rng.uniform(0.05, 0.25)) if rng is not None else 0.05
    pixels = torch.from_numpy(image[None].astype(np.float32) / 255.0)
    return canny_edges(pixels, low, 2 * low)[0].permute(2, 0, 1).numpy()


# --- text conditioning, from the family's data ----------------------------------------------------------------


def encode_text(components: Components, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """UNet context [B, 77, D] and pooled embedding (families with size conditioning) for `captions`.

    Each encoder gives the hidden layer its family's spec names (-1: last, after the final LayerNorm; -2: the
    penultimate); the contexts are concatenated along the feature axis; the pooled output is the projected EOS
    state of the encoder with a projection, exactly as the diffusers pipelines and ComfyUI compute them.
    """
    family = FAMILIES[components.family]
    contexts, pooled = [], None
    for spec, encoder, tokenizer in zip(family.text_encoders, components.text_encoders, components.tokenizers,
                                        strict=True):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        out = encoder(ids, output_hidden_states=True)
        contexts.append(out.last_hidden_state if spec.hidden_layer == -1 else out.hidden_states[spec.hidden_layer])
        if spec.with_projection:
            pooled = out.text_embeds
    return torch.cat(contexts, dim=-1), pooled


def time_ids(family: Family, count: int, rng: np.random.Generator) -> torch.Tensor | None:
    """SDXL's extra numbers per sample, random so that the model learns to ignore them (the data has one size).

    base (6): original height, width, crop top, left, target height, width; refiner (5): original height, width,
    crop top, left, aesthetic score.
    """
    if family.time_ids == 0:
        return None
    rows = []
    for _ in range(count):
        original = [float(rng.choice(SIZE_CHOICES))] * 2
        crop = [0.0, 0.0]
        last = [float(rng.choice(SIZE_CHOICES))] * 2 if family.time_ids == 6 else [float(rng.uniform(2.0, 8.0))]
        rows.append(original + crop + last)
    return torch.tensor(rows)


def conditioning(
    components: Components, captions: list[str], rng: np.random.Generator, dropout: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Context and SDXL added conditioning for a batch, with captions dropped for classifier-free guidance.

    A dropped caption becomes the empty prompt; for families with pooled conditioning half of the dropped ones
    are all-zero embeddings instead, since SDXL pipelines zero the unconditional branch of an empty negative
    prompt (`force_zeros_for_empty_prompt`) while node graphs encode "" with the text encoders.
    """
    family = FAMILIES[components.family]
    dropped = rng.random(len(captions)) < dropout
    context, pooled = encode_text(components, ["" if d else c for c, d in zip(captions, dropped, strict=True)])
    if pooled is None:
        return context, None
    zero = torch.from_numpy(dropped & (rng.random(len(captions)) < 0.5))
    context = torch.where(zero[:, None, None], torch.zeros_like(context), context)
    pooled = torch.where(zero[:, None], torch.zeros_like(pooled), pooled)
    return context, {"text_embeds": pooled, "time_ids": time_ids(family, len(captions), rng)}


# --- the diffusion training loop ------------------------------------------------------------------------------


class RunningMean:
    """Mean of the values added since the last `take`, for progress lines."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def take(self) -> float:
        mean = self.total / max(self.count, 1)
        self.total, self.count = 0.0, 0
        return mean


def train_diffusion(
    name: str,
    components: Components,
    data: LatentData,
    steps: int,
    config: TrainConfig,
    log: Log,
    controlnet: ControlNetModel | None = None,
    max_timestep: int | None = None,
) -> list[float]:
    """Noise-prediction training: L = E w(t) ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, c)||^2.

    Trains the UNet and text encoders jointly, or only `controlnet` (SD1 parts frozen) when given.
    w(t) = min(SNR(t), snr_gamma) / SNR(t) (Min-SNR), except for the refiner: `max_timestep` samples t from
    [0, max) half of the time, so that the low-noise steps, the refiner's whole job, are learnt well and unweighted.
    The trained weights are replaced by their EMA at the end. Returns the mean (weighted) loss of each logging
    interval.
    """
    scheduler = DDPMScheduler.from_config(components.scheduler_config)
    if controlnet is None:
        modules: list[torch.nn.Module] = [components.unet, *components.text_encoders]
    else:
        modules = [controlnet]
        for frozen in (components.unet, *components.text_encoders):
            frozen.requires_grad_(False).eval()
    params = [p for m in modules for p in m.parameters()]
    for m in modules:
        m.train()
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    schedule = warmup_cosine(optimiser, steps)
    ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)  # warm-up: early steps count
    weighted = max_timestep is None and config.snr_gamma > 0
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    running, history = RunningMean(), []
    start = time.perf_counter()
    n_timesteps = scheduler.config.num_train_timesteps
    for step in range(steps):
        index = torch.randint(len(data.captions), (config.batch,), generator=generator)
        x0 = data.batch(index, generator)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(n_timesteps, (config.batch,), generator=generator)
        if max_timestep is not None:
            low = torch.randint(max_timestep, (config.batch,), generator=generator)
            t = torch.where(torch.rand(config.batch, generator=generator) < 0.5, low, t)
        xt = scheduler.add_noise(x0, noise, t)
        captions = [data.captions[i] for i in index.tolist()]
        dropout = 0.5 if controlnet is not None else config.caption_dropout  # ControlNet learns from edges alone too
        if controlnet is None:
            context, added = conditioning(components, captions, rng, dropout)
            pred = components.unet(xt, t, context, added_cond_kwargs=added).sample
        else:
            with torch.no_grad():
                context, added = conditioning(components, captions, rng, dropout)
            hint = torch.from_numpy(np.stack([canny_hint(data.images[i], rng) for i in index.tolist()]))
            down, mid = controlnet(xt, t, context, controlnet_cond=hint, return_dict=False)
            pred = components.unet(xt, t, context, down_block_additional_residuals=down,
                                   mid_block_additional_residual=mid).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        if weighted:
            snr = compute_snr(scheduler, t)
            per_sample = per_sample * snr.clamp(max=config.snr_gamma) / snr
        loss = per_sample.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        ema.step(params)
        running.add(loss.item())
        if (step + 1) % config.log_every == 0 or step == 0:
            history.append(running.take())
            log(f"{name} step {step + 1}/{steps} loss {history[-1]:.4f} ({time.perf_counter() - start:.0f}s)")
    ema.copy_to(params)
    for m in (*modules, components.unet, *components.text_encoders):
        m.eval().requires_grad_(False)
    return history


def make_controlnet(unet: UNet2DConditionModel, seed: int) -> ControlNetModel:
    """ControlNet copied from `unet`, its output convs zero as ControlNet training starts."""
    with seeded(seed):
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_HINT_CHANNELS)


# --- the whole run --------------------------------------------------------------------------------------------

VAE_NAME = "vae/nodegraph-demo-vae.safetensors"  # the shared VAE before its latents are rescaled per family
CHECKPOINT_NAMES = {
    "sd1": "checkpoints/nodegraph-demo-sd1.safetensors",
    "sdxl": "checkpoints/nodegraph-demo-sdxl-base.safetensors",
    "sdxl_refiner": "checkpoints/nodegraph-demo-sdxl-refiner.safetensors",
    "controlnet": "controlnet/nodegraph-demo-canny.safetensors",
}


PREVIEW_FIT_IMAGES = 1024
PREVIEW_PERTURBATION = 0.6  # std of the noise added to encoded latents, in the UNet's (unit-variance) space


@torch.no_grad()
def preview_factors(components: Components, images: np.ndarray) -> LatentRgb:
    """Live-preview factors fitted to this checkpoint's VAE: UNet-space latents -> RGB (see preview.py).

    The published SD factors describe Stability's VAE, not ours; with them a preview shows the wrong colours.
    Fitted on the latents of `images` (uint8 NHWC) and on those latents plus noise, decoded: a sampler's
    intermediate and final latents stray from what the encoder makes, and a fit on encoded latents alone put a
    green tint on the previews of generated pictures.
    """
    pixels = torch.from_numpy(images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)
    vae = components.vae
    scale = vae.config.scaling_factor
    latents = vae.encode(pixels).latent_dist.mean * scale
    generator = torch.Generator().manual_seed(0)
    perturbed = latents + PREVIEW_PERTURBATION * torch.randn(latents.shape, generator=generator)
    decoded = vae.decode(perturbed / scale).sample.clamp(-1, 1)
    return fit_latent_rgb(torch.cat([latents, perturbed]), torch.cat([pixels, decoded]))


def stored(components: Components, images: np.ndarray) -> Components:
    """What is written: fp16 copies of the weights (the loader casts them back with `dtype=`), and preview factors
    fitted to exactly those weights (read back as fp32)."""
    out = copy.deepcopy(components).to(dtype=torch.float16)
    out.latent_rgb = preview_factors(copy.deepcopy(out).to(dtype=torch.float32), images[:PREVIEW_FIT_IMAGES])
    return out


def run(config: TrainConfig, out_dir: Path, families: list[str], vae_from: Path | None = None,
        log: Log = print) -> dict[str, Any]:
    """Train everything named in `families` ("sd1" includes its ControlNet) and write the files; returns timings.

    `vae_from`: reuse this VAE file (e.g. the `vae/` file an earlier run wrote) instead of training one.
    """
    torch.set_num_threads(config.threads)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - start, 1)
        log(f"== {name}: {timings[name]:.0f}s")
        return result

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if vae_from is None:
            vae = timed("vae", lambda: train_vae(config, log))
        else:
            vae = read_vae_file(vae_from, dtype=torch.float32)
            log(f"using the VAE of {vae_from}")
        vae = vae.to(torch.float16).to(torch.float32)  # the latents come from exactly the weights shipped (fp16)
        vae_path = write_vae_file(copy.deepcopy(vae).to(torch.float16), out_dir / VAE_NAME)
        log(f"wrote {vae_path} ({vae_path.stat().st_size / 1e6:.1f} MB)")
        if not families:
            return {"timings_s": timings, "files": {"vae": str(vae_path)}}
        raw = timed("encode", lambda: build_latent_data(vae, config, log))
        latent_std = float(raw.mean.std() / vae.config.scaling_factor)  # scaled by DEMO_VAE's factor above
        written: dict[str, str] = {}
        for family in families:
            components = demo_components(family, config.seed)
            components.vae = rescaled_vae(vae, latent_std, FAMILIES[family].latent_scale)
            data = LatentData(raw.mean / (vae.config.scaling_factor * latent_std),
                              raw.std / (vae.config.scaling_factor * latent_std), raw.captions, raw.images)
            steps = {"sd1": config.sd1_steps, "sdxl": config.sdxl_steps, "sdxl_refiner": config.refiner_steps}
            max_t = 300 if family == "sdxl_refiner" else None
            timed(family, lambda: train_diffusion(family, components, data, steps[family], config, log,
                                                  max_timestep=max_t))
            path = out_dir / CHECKPOINT_NAMES[family]
            write_single_file(stored(components, data.images), path)
            written[family] = str(path)
            log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
            if family == "sd1" and config.controlnet_steps:
                controlnet = make_controlnet(components.unet, config.seed + 5)
                timed("controlnet", lambda: train_diffusion("controlnet", components, data, config.controlnet_steps,
                                                            config, log, controlnet=controlnet))
                path = out_dir / CHECKPOINT_NAMES["controlnet"]
                write_controlnet_file(copy.deepcopy(controlnet).to(torch.float16), path)
                written["controlnet"] = str(path)
                log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return {"timings_s": timings, "files": written}


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Path, list[str], Path | None]:
    parser = argparse.ArgumentParser(description="Train the nodegraph demo models on synthetic shapes (CPU).")
    parser.add_argument("--out", type=Path, default=Path("demo_models"), help="models root (ComfyUI layout)")
    parser.add_argument("--families", default="sd1,sdxl,sdxl_refiner",
                        help="comma-separated: sd1 (with its ControlNet), sdxl, sdxl_refiner")
    parser.add_argument("--vae-from", type=Path, help="reuse this VAE file instead of training one")
    for f in fields(TrainConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    return config, args.out, [f for f in args.families.split(",") if f], args.vae_from


def main(argv: list[str] | None = None) -> None:
    config, out_dir, families, vae_from = parse_args(argv)
    print(f"training {families} with {config}", flush=True)
    result = run(config, out_dir, families, vae_from, log=lambda line: print(line, flush=True))
    print(result)


if __name__ == "__main__":
    main()
