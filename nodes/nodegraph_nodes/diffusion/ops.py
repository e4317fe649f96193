"""What the SD nodes do, between their declarations and the diffusion library: load through the model cache,
encode text, run the VAE and the sampler with progress, previews, interrupts and one retry after running out of
accelerator memory.

Values crossing node boundaries (latents, images, conditioning) are float32 CPU tensors; models stay in the cache
and are placed on the compute device only while a node uses them.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from .conditioning import Conditioning, ControlSpec
from .handles import ClipHandle, ControlNetHandle, ModelHandle, VaeHandle
from .model_cache import ModelCache, model_cache, release_memory
from .text_encoding import TEXT_FAMILIES, ClipTextEncoder

T = TypeVar("T")


class OutOfMemory(RuntimeError):
    """The accelerator ran out of memory twice, with the cache emptied in between."""


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def with_oom_retry(cache: ModelCache, fn: Callable[[], T]) -> T:
    """Run `fn`; if the accelerator runs out of memory, move every idle model off it and try once more."""
    try:
        return fn()
    except Exception as exc:
        if not _is_oom(exc):
            raise
    cache.free(free_memory=True)
    release_memory()
    try:
        return fn()
    except Exception as exc:
        if not _is_oom(exc):
            raise
        loaded = ", ".join(f"{e['file']}:{e['component']} on {e['device']} ({e['bytes'] >> 20} MiB)"
                           for e in cache.stats()["loaded"]) or "nothing"
        raise OutOfMemory(
            f"out of memory on {cache.device} even after moving idle models to the CPU (loaded: {loaded}). "
            "Use a smaller image or batch, fewer ControlNets, --precision fp16, or a lower --vram-budget."
        ) from exc


# --- loading ---------------------------------------------------------------------------------------------------------


def load_checkpoint(path: Path, settings: dict[str, Any]) -> tuple[ModelHandle, ClipHandle, VaeHandle]:
    cache = model_cache(settings)
    refs = cache.refs(path, "checkpoint", ("unet", "clip", "vae", "info"))
    with cache.use(refs["info"]) as info:  # reads the file unless it is already loaded
        family, scheduler_config, scale = info["family"], info["scheduler_config"], info["latent_scale"]
    return (
        ModelHandle(refs["unet"], family, scheduler_config, scale),
        ClipHandle(refs["clip"], family),
        VaeHandle(refs["vae"], family),
    )


def load_vae(path: Path, settings: dict[str, Any]) -> VaeHandle:
    cache = model_cache(settings)
    refs = cache.refs(path, "vae", ("vae", "info"))
    with cache.use(refs["info"]) as info:
        return VaeHandle(refs["vae"], info["family"])


def load_controlnet(path: Path, settings: dict[str, Any]) -> ControlNetHandle:
    cache = model_cache(settings)
    refs = cache.refs(path, "controlnet", ("controlnet", "info"))
    with cache.use(refs["info"]) as info:
        return ControlNetHandle(refs["controlnet"], info["family"])


# --- text ------------------------------------------------------------------------------------------------------------


def encode_text(clip: ClipHandle, text: str | dict[str, str]) -> Conditioning:
    """CLIPTextEncode: one prompt for every encoder, or a prompt per encoder name ({"l": ..., "g": ...})."""
    cache = model_cache()
    with cache.use(clip.ref) as parts:
        encoder = ClipTextEncoder(
            TEXT_FAMILIES[clip.family], parts["models"], parts["tokenizers"], stop_at_clip_layer=clip.stop_at_layer
        )
        cond = with_oom_retry(cache, lambda: encoder.encode(text))
    return _to_cpu(cond)


def _to_cpu(cond: Conditioning) -> Conditioning:
    move = lambda t: None if t is None else t.detach().to("cpu", torch.float32)  # noqa: E731
    return replace(cond, embeds=move(cond.embeds), pooled=move(cond.pooled), time_ids=move(cond.time_ids))


# --- VAE -------------------------------------------------------------------------------------------------------------

VAE_BATCH = 4  # images per VAE call: bounds the activation memory of large batches


def vae_encode(vae: VaeHandle, pixels: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, 3] in 0..1 -> raw VAE latents [B, 4, H/8, W/8] (the distribution's mean, so the same image
    always gives the same latent). The image is cropped to a multiple of 8 pixels."""
    h, w = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    if h == 0 or w == 0:
        raise ValueError(f"image of {pixels.shape[2]}x{pixels.shape[1]} is smaller than 8x8 pixels")
    pixels = pixels[:, :h, :w, :]
    cache = model_cache()
    with cache.use(vae.ref) as model:
        param = next(model.parameters())

        def run() -> torch.Tensor:
            out = []
            with torch.no_grad():
                for chunk in pixels.split(VAE_BATCH):
                    x = chunk.movedim(-1, 1).to(param.device, param.dtype) * 2.0 - 1.0
                    out.append(model.encode(x).latent_dist.mode().float().cpu())
            return torch.cat(out)

        return with_oom_retry(cache, run)


def vae_decode(vae: VaeHandle, samples: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents -> IMAGE [B, H, W, 3] float32 in 0..1 on the CPU."""
    cache = model_cache()
    with cache.use(vae.ref) as model:
        param = next(model.parameters())

        def run() -> torch.Tensor:
            out = []
            with torch.no_grad():
                for chunk in samples.split(VAE_BATCH):
                    z = chunk.to(param.device, param.dtype)
                    image = model.decode(z).sample.float()
                    out.append(((image + 1.0) / 2.0).clamp(0, 1).movedim(1, -1).cpu())
            return torch.cat(out)

        return with_oom_retry(cache, run)


# --- sampling --------------------------------------------------------------------------------------------------------


def _progress_callback(context: Any, family: str) -> Callable[..., None]:
    """Per-step progress, a latent preview when clients want one, and the interrupt check."""
    from .preview import latent_to_rgb

    want_previews = getattr(context, "previews", True)

    def callback(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        preview = latent_to_rgb(denoised, family) if want_previews else None
        context.progress(step + 1, total, preview=preview)

    return callback


def _resolve_controls(stack: ExitStack, cache: ModelCache, cond: Conditioning) -> Conditioning:
    """Swap ControlNet handles for the modules, pinned in the cache for the duration of the sampling."""
    if not cond.controls:
        return cond
    controls = []
    for spec in cond.controls:
        net = spec.controlnet
        if isinstance(net, ControlNetHandle):
            net = stack.enter_context(cache.use(net.ref))
        controls.append(replace(spec, controlnet=net))
    return replace(cond, controls=tuple(controls))


def ksample(
    model: ModelHandle,
    positive: Conditioning,
    negative: Conditioning,
    latent: dict[str, Any],
    context: Any,
    **options: Any,
) -> torch.Tensor:
    """KSampler / KSamplerAdvanced: `options` are ksampler.ksample's keyword arguments. Latents arrive and
    leave as raw VAE latents; the sampler works in the model's scaled latent space."""
    from .ksampler import ksample as run_ksample
    from .model_sampling import DiscreteModelSampling

    cache = model_cache()
    sampling = DiscreteModelSampling.from_config(model.scheduler_config)
    callback = _progress_callback(context, model.family)
    with ExitStack() as stack:
        unet = stack.enter_context(cache.use(model.ref))
        pos = _resolve_controls(stack, cache, positive)
        neg = _resolve_controls(stack, cache, negative)
        scaled = latent["samples"] * model.latent_scale
        samples = with_oom_retry(
            cache,
            lambda: run_ksample(
                unet, sampling, pos, neg, scaled, callback=callback, batch_index=latent.get("batch_index"), **options
            ),
        )
    if torch.equal(samples, scaled):  # no step taken (denoise 0): give the input back bit for bit
        return latent["samples"].clone()
    return samples / model.latent_scale


def sample_custom(
    model: ModelHandle,
    positive: Conditioning,
    negative: Conditioning,
    latent: dict[str, Any],
    context: Any,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SamplerCustom: returns (samples, the last denoised prediction)."""
    from .ksampler import sample_with_sigmas
    from .model_sampling import DiscreteModelSampling

    cache = model_cache()
    sampling = DiscreteModelSampling.from_config(model.scheduler_config)
    progress = _progress_callback(context, model.family)
    last: dict[str, torch.Tensor] = {}

    def callback(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        last["denoised"] = denoised
        progress(step, total, x, denoised)

    with ExitStack() as stack:
        unet = stack.enter_context(cache.use(model.ref))
        pos = _resolve_controls(stack, cache, positive)
        neg = _resolve_controls(stack, cache, negative)
        samples = with_oom_retry(
            cache,
            lambda: sample_with_sigmas(
                unet, sampling, pos, neg, latent["samples"] * model.latent_scale, callback=callback,
                batch_index=latent.get("batch_index"), **options,
            ),
        )
    denoised = last["denoised"].detach().float().cpu() if "denoised" in last else samples
    return samples / model.latent_scale, denoised / model.latent_scale


def noise_schedule(model: ModelHandle, scheduler: str, steps: int, denoise: float, beta_schedule: str) -> torch.Tensor:
    """NoiseSchedule: sigmas for `steps` steps (denoise < 1: the tail of a longer schedule), ending in 0."""
    from .ksampler import ksampler_sigmas
    from .model_sampling import DiscreteModelSampling

    config = dict(model.scheduler_config)
    if beta_schedule != "model":
        config["beta_schedule"] = beta_schedule
    return ksampler_sigmas(DiscreteModelSampling.from_config(config), scheduler, "euler", steps, denoise)
