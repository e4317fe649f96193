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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import torch

from .conditioning import Conditioning, entries, map_entries
from .handles import ClipHandle, ClipVisionHandle, ControlNetHandle, ModelHandle, UpscaleModelHandle, VaeHandle
from .cache_readers import model_cache
from .model_cache import ModelCache, release_memory
from .text_encoding import TEXT_FAMILIES, ClipTextEncoder, refiner_time_ids

if TYPE_CHECKING:
    from nodegraph.engine import Runtime

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


def load_checkpoint(runtime: Runtime, path: Path) -> tuple[ModelHandle, ClipHandle, VaeHandle]:
    cache = model_cache(runtime)
    refs = cache.refs(path, "checkpoint", ("unet", "clip", "vae", "info"))
    with cache.use(refs["info"]) as info:  # reads the file unless it is already loaded
        family, scheduler_config, scale = info["family"], info["scheduler_config"], info["latent_scale"]
        latent_rgb = info.get("latent_rgb")
    return (
        ModelHandle(refs["unet"], family, scheduler_config, scale, latent_rgb),
        ClipHandle(refs["clip"], family),
        VaeHandle(refs["vae"], family),
    )


def load_vae(runtime: Runtime, path: Path) -> VaeHandle:
    cache = model_cache(runtime)
    refs = cache.refs(path, "vae", ("vae", "info"))
    with cache.use(refs["info"]) as info:
        return VaeHandle(refs["vae"], info["family"])


def load_controlnet(runtime: Runtime, path: Path) -> ControlNetHandle:
    cache = model_cache(runtime)
    refs = cache.refs(path, "controlnet", ("controlnet", "info"))
    with cache.use(refs["info"]) as info:
        return ControlNetHandle(refs["controlnet"], info["family"])


def load_lora(
    runtime: Runtime, model: ModelHandle | None, clip: ClipHandle | None, path: Path, strength_model: float,
    strength_clip: float,
) -> tuple[ModelHandle | None, ClipHandle | None]:
    """LoraLoader: the handles with the LoRA added to their patches (nothing is changed until they are used).

    The file is read into the model cache now, and matched against the model and text encoders, so that a LoRA
    that fits neither (another model family, not a LoRA) fails here with what it holds; names that fit no layer
    are logged as ComfyUI logs them ("lora key not loaded")."""
    from .lora import LoraError, describe_match
    from .patching import LoraPatch

    cache = model_cache(runtime)
    ref = cache.refs(path, "lora", ("lora",))["lora"]
    with ExitStack() as stack:
        lora = stack.enter_context(cache.use(ref))
        models: dict[str, torch.nn.Module] = {}
        if model is not None:
            models["unet"] = stack.enter_context(cache.use(model.ref))
        if clip is not None:
            models.update(stack.enter_context(cache.use(clip.ref))["models"])
        matched = describe_match(lora, models)
    if not matched:
        raise LoraError(f"{path.name}: none of its {len(lora.adapters)} layers fit this {getattr(model or clip, 'family', '')} "
                        f"model (e.g. {list(lora.adapters)[:2]}); is it a LoRA for another model family?")
    if model is not None and strength_model != 0:
        model = replace(model, patches=model.patches + (LoraPatch(ref, float(strength_model)),))
    if clip is not None and strength_clip != 0:
        clip = replace(clip, patches=clip.patches + (LoraPatch(ref, float(strength_clip)),))
    return model, clip


def use_model(cache: ModelCache, model: ModelHandle) -> Any:
    """The MODEL's UNet, pinned in the cache and with its LoRAs applied for the duration of the `with` block.

    A MODEL whose guidance patches change the UNet's attention during its calls (SelfAttentionGuidance,
    PerturbedAttentionGuidance swap attention processors on the shared module) takes the UNet for itself: prompts
    running side by side must not sample through another prompt's processors."""
    from .patching import patched, unet_modules

    exclusive = any(getattr(p, "during_unet", None) is not None or getattr(p, "swaps_attention", False)
                    for p in model.cfg_patches)
    return patched(cache, model.ref, model.patches, unet_modules, exclusive=exclusive)


def use_clip(cache: ModelCache, clip: ClipHandle) -> Any:
    """The CLIP's parts ({"models": ..., "tokenizers": ...}), with its LoRAs applied, for a `with` block."""
    from .patching import clip_modules, patched

    return patched(cache, clip.ref, clip.patches, clip_modules)


def load_upscale_model(runtime: Runtime, path: Path) -> UpscaleModelHandle:
    cache = model_cache(runtime)
    refs = cache.refs(path, "upscale_model", ("model", "info"))
    with cache.use(refs["info"]) as info:
        return UpscaleModelHandle(refs["model"], info["architecture"], info["scale"])


def upscale_image(handle: UpscaleModelHandle, image: torch.Tensor, context: Any) -> torch.Tensor:
    """ImageUpscaleWithModel: tiled, with progress per tile and halving the tile when the accelerator runs out of
    memory (upscale.upscale_image)."""
    from .upscale import upscale_image as run

    cache = model_cache(context.runtime)
    info_ref = replace(handle.ref, component="info")
    with cache.use(info_ref) as info, cache.use(handle.ref):
        return run(info["descriptor"], image, progress=lambda done, total: context.progress(done, total))


def load_clip_vision(runtime: Runtime, path: Path) -> ClipVisionHandle:
    cache = model_cache(runtime)
    refs = cache.refs(path, "clip_vision", ("clip_vision", "info"))
    cache.preload(refs["clip_vision"])  # read now, so that a bad file fails in the loader node
    return ClipVisionHandle(refs["clip_vision"])


def encode_clip_vision(runtime: Runtime, handle: ClipVisionHandle, image: torch.Tensor, crop: bool) -> Any:
    from .clip_vision import encode_image

    cache = model_cache(runtime)
    with cache.use(handle.ref) as model:
        return with_oom_retry(cache, lambda: encode_image(model, image, crop))


# --- text ------------------------------------------------------------------------------------------------------------


def encode_text(
    runtime: Runtime, clip: ClipHandle, text: str | dict[str, str], time_ids: torch.Tensor | None = None
) -> Conditioning:
    """CLIPTextEncode: one prompt for every encoder, or a prompt per encoder name ({"l": ..., "g": ...}).

    `time_ids` is the SDXL size conditioning of CLIPTextEncodeSDXL / ...Refiner (text_encoding.sdxl_time_ids,
    refiner_time_ids); without it the sampler derives the family's defaults from the latent size."""
    from .embeddings import EmbeddingLibrary

    cache = model_cache(runtime)
    with use_clip(cache, clip) as parts:
        encoder = ClipTextEncoder(
            TEXT_FAMILIES[clip.family], parts["models"], parts["tokenizers"], stop_at_clip_layer=clip.stop_at_layer,
            embeddings=EmbeddingLibrary(clip.embedding_dirs),
        )
        with cache.compute():  # one heavy computation at a time on a shared CPU (ModelCache.compute)
            cond = with_oom_retry(cache, lambda: encoder.encode(text))
    return _to_cpu(replace(cond, time_ids=time_ids))


def _to_cpu(cond: Conditioning) -> Conditioning:
    move = lambda t: None if t is None else t.detach().to("cpu", torch.float32)  # noqa: E731
    return replace(cond, embeds=move(cond.embeds), pooled=move(cond.pooled), time_ids=move(cond.time_ids))


# --- VAE -------------------------------------------------------------------------------------------------------------

VAE_BATCH = 4  # images per VAE call: bounds the activation memory of large batches


def vae_encode(runtime: Runtime, vae: VaeHandle, pixels: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, 3] in 0..1 -> raw VAE latents [B, 4, H/8, W/8] (the distribution's mean, so the same image
    always gives the same latent). The image is cropped to a multiple of 8 pixels."""
    h, w = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    if h == 0 or w == 0:
        raise ValueError(f"image of {pixels.shape[2]}x{pixels.shape[1]} is smaller than 8x8 pixels")
    pixels = pixels[:, :h, :w, :]
    cache = model_cache(runtime)
    with cache.use(vae.ref) as model:
        param = next(model.parameters())

        def run() -> torch.Tensor:
            out = []
            with torch.no_grad(), cache.compute():
                for chunk in pixels.split(VAE_BATCH):
                    x = chunk.movedim(-1, 1).to(param.device, param.dtype) * 2.0 - 1.0
                    out.append(model.encode(x).latent_dist.mode().float().cpu())
            return torch.cat(out)

        return with_oom_retry(cache, run)


def vae_decode(runtime: Runtime, vae: VaeHandle, samples: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents -> IMAGE [B, H, W, 3] float32 in 0..1 on the CPU."""
    cache = model_cache(runtime)
    from .memory import check_vae_decode_fits

    with cache.use(vae.ref) as model:
        param = next(model.parameters())
        check_vae_decode_fits(model, tuple(samples.shape), VAE_BATCH)
        # prompts side by side (serve --concurrency): decodes asked at the same time run as one batch
        batcher = cache.decode_batcher(vae.ref)

        def decode(z: torch.Tensor) -> torch.Tensor:
            if batcher is not None:
                return batcher.decode(z)
            with cache.compute():
                return model.decode(z).sample.float()

        def run() -> torch.Tensor:
            out = []
            with torch.no_grad():
                for chunk in samples.split(VAE_BATCH):
                    image = decode(chunk.to(param.device, param.dtype))
                    out.append(((image + 1.0) / 2.0).clamp(0, 1).movedim(1, -1).cpu())
            return torch.cat(out)

        return with_oom_retry(cache, run)


# --- sampling --------------------------------------------------------------------------------------------------------


# Families whose VAE (so latent space, so preview colours) is another family's.
PREVIEW_FAMILY = {"sd2": "sd1", "sdxl_refiner": "sdxl"}


def _progress_callback(context: Any, model: ModelHandle) -> Callable[..., None]:
    """Per-step progress, a latent preview when clients want one, and the interrupt check.

    The prompt's preview method (ComfyUI's): none; auto or latent2rgb (the latent -> RGB factors); taesd (the TAESD
    decoder from models/vae_approx when installed, else the factors)."""
    from .preview import latent_to_rgb
    from .taesd import taesd_previewer

    method = getattr(context, "preview_method", "auto") if getattr(context, "previews", True) else "none"
    latent_family = PREVIEW_FAMILY.get(model.family, model.family)
    taesd = taesd_previewer(getattr(context, "env", None), latent_family) if method == "taesd" else None

    def callback(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        if method == "none":
            preview = None
        elif taesd is not None:
            preview = taesd(denoised)
        else:
            preview = latent_to_rgb(denoised, latent_family, model.latent_rgb)
        context.progress(step + 1, total, preview=preview)

    return callback


def _interrupt_check(context: Any) -> Callable[[], None] | None:
    """The running node's interrupt check (raises engine.Interrupted), for the denoiser to call between model
    calls; None for callers without a node context."""
    return getattr(context, "check_interrupted", None)


def _guard_unet(stack: ExitStack, unet: torch.nn.Module, shape: tuple[int, ...], cfg: float, context: Any) -> None:
    """Refuse a latent too large for the device before sampling, and let an interrupt stop a UNet call half-way."""
    from .denoiser import interruptible
    from .memory import check_unet_fits

    check_unet_fits(unet, tuple(shape), cfg, context.runtime.settings)
    check = getattr(context, "check_interrupted", None)
    if check is not None:
        stack.enter_context(interruptible(unet, check))


def _resolve_controls(
    stack: ExitStack, cache: ModelCache, cond: Conditioning, unet: torch.nn.Module, family: str
) -> Conditioning:
    """Swap ControlNet handles for the modules, pinned in the cache for the duration of the sampling, and refuse
    ControlNets made for another model family (they would fail deep inside the UNet call)."""
    if not isinstance(cond, Conditioning):  # several prompts (ConditioningCombine): each entry
        return map_entries(cond, lambda c: _resolve_controls(stack, cache, c, unet, family))
    if cond.gligen is not None:  # GLIGENTextBoxApply's model, pinned like the ControlNets (gligen.py)
        from .gligen import resolve

        cond = resolve(stack, cache, cond)
    if not cond.controls:
        return cond
    controls = []
    for spec in cond.controls:
        net = spec.controlnet
        if isinstance(net, ControlNetHandle):
            net = stack.enter_context(cache.use(net.ref))
        if _unet_shape(net) != _unet_shape(unet):
            raise ValueError(
                f"a ControlNet for {getattr(spec.controlnet, 'family', 'another')} models cannot steer this "
                f"{family} model (cross-attention width {net.config.cross_attention_dim} vs "
                f"{unet.config.cross_attention_dim}); load a ControlNet trained for {family}"
            )
        controls.append(replace(spec, controlnet=net))
    return replace(cond, controls=tuple(controls))


def _unet_shape(module: torch.nn.Module) -> tuple[Any, ...]:
    """What a ControlNet must share with the UNet it steers: text width and the SDXL-style added conditioning."""
    config = module.config
    return (config.cross_attention_dim, config.addition_embed_type, config.projection_class_embeddings_input_dim)


def _share_controls_with_uncond(positive: Conditioning, negative: Conditioning | None) -> Conditioning | None:
    """The old ControlNetApply sees only the positive; ComfyUI then gives its ControlNets to a negative that has
    none, so that both halves of classifier-free guidance are steered alike."""
    if negative is None:
        return negative
    source = next((c for c in entries(positive) if c.controls), None)
    if source is None or not source.controls[-1].apply_to_uncond:
        return negative
    return map_entries(negative, lambda c: c if c.controls else replace(c, controls=source.controls))


# --- SDXL size conditioning ------------------------------------------------------------------------------------------
# Each SDXL-family UNet takes its own time ids: the base 6 numbers (original size, crop, target size), the refiner 5
# (original size, crop, aesthetic score). As ComfyUI does, a conditioning without them (plain CLIPTextEncode) gets
# the family's defaults at the latent's size, and one made for the other family keeps its size and crop.


def _base_time_ids(ids: torch.Tensor | None, height: int, width: int, negative: bool) -> torch.Tensor | None:
    """None stays None (the denoiser's default: the latent's size, no crop, target = size); a refiner's ids keep
    their size and crop and target that same size."""
    if ids is None or ids.shape[-1] == 6:
        return ids
    return torch.cat([ids[:, :4], ids[:, :2]], dim=1)


def _refiner_time_ids(ids: torch.Tensor | None, height: int, width: int, negative: bool) -> torch.Tensor:
    """ComfyUI's refiner defaults: the latent's size, no crop, aesthetic score 6 (positive) or 2.5 (negative)."""
    score = 2.5 if negative else 6.0
    if ids is None:
        return refiner_time_ids(height=height, width=width, aesthetic_score=score)
    if ids.shape[-1] == 5:
        return ids
    return torch.cat([ids[:, :4], torch.full((ids.shape[0], 1), score, dtype=ids.dtype)], dim=1)


TIME_IDS: dict[str, Callable[[torch.Tensor | None, int, int, bool], torch.Tensor | None]] = {
    "sdxl": _base_time_ids,
    "sdxl_refiner": _refiner_time_ids,
}


def _prepare_conditionings(
    model: ModelHandle, positive: Conditioning, negative: Conditioning | None, samples: torch.Tensor
) -> tuple[Conditioning, Conditioning | None]:
    """The pair as the sampler needs it: the old ControlNetApply's controls shared with the negative, and the time
    ids the model's family takes."""
    from .denoiser import VAE_SCALE_FACTOR

    from .inpaint import scale_concat

    negative = _share_controls_with_uncond(positive, negative)
    # InpaintModelConditioning's latent is a raw VAE latent; the UNet works in its scaled space
    positive = map_entries(positive, lambda c: scale_concat(c, model.latent_scale))
    if negative is not None:
        negative = map_entries(negative, lambda c: scale_concat(c, model.latent_scale))
    fit = TIME_IDS.get(model.family)
    if fit is None:
        return positive, negative
    height, width = samples.shape[-2] * VAE_SCALE_FACTOR, samples.shape[-1] * VAE_SCALE_FACTOR
    positive = map_entries(positive, lambda c: replace(c, time_ids=fit(c.time_ids, height, width, False)))
    if negative is not None:
        negative = map_entries(negative, lambda c: replace(c, time_ids=fit(c.time_ids, height, width, True)))
    return positive, negative


def _latent_options(model: ModelHandle, latent: dict[str, Any]) -> dict[str, Any]:
    """What every sampler node passes on from the LATENT and the MODEL besides the samples: the batch index, the
    inpainting noise mask and DifferentialDiffusion's strength."""
    return {
        "batch_index": latent.get("batch_index"),
        "noise_mask": latent.get("noise_mask"),
        "differential_diffusion": model.differential_diffusion,
    }


def run_ksampler(
    model: ModelHandle,
    positive: Conditioning,
    negative: Conditioning,
    latent: dict[str, Any],
    context: Any,
    *,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float = 1.0,
    add_noise: bool = True,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = True,
) -> torch.Tensor:
    """KSampler / KSamplerAdvanced on a MODEL handle: the sampling itself is sampling_run.ksample (whose arguments
    these are). Latents arrive and leave as raw VAE latents; the sampler works in the model's scaled latent space."""
    from .sampling_run import ksample
    from .sigma_table import DiscreteModelSampling

    cache = model_cache(context.runtime)
    sampling = DiscreteModelSampling.from_config(model.scheduler_config)
    callback = _progress_callback(context, model)
    positive, negative = _prepare_conditionings(model, positive, negative, latent["samples"])
    with ExitStack() as stack:
        unet = stack.enter_context(use_model(cache, model))
        _guard_unet(stack, unet, latent["samples"].shape, cfg, context)
        pos = _resolve_controls(stack, cache, positive, unet, model.family)
        neg = _resolve_controls(stack, cache, negative, unet, model.family) if negative is not None else None
        scaled = latent["samples"] * model.latent_scale
        samples = with_oom_retry(
            cache,
            lambda: ksample(
                unet, sampling, pos, neg, scaled, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
                scheduler=scheduler, denoise=denoise, add_noise=add_noise, start_step=start_step,
                last_step=last_step, force_full_denoise=force_full_denoise, callback=callback,
                interrupt=_interrupt_check(context), patches=model.cfg_patches, **_latent_options(model, latent),
            ),
        )
    if torch.equal(samples, scaled):  # no step taken (denoise 0): give the input back bit for bit
        return latent["samples"].clone()
    return samples / model.latent_scale


def sample_custom(
    model: ModelHandle,
    positive: Conditioning,
    negative: Conditioning | None,
    latent: dict[str, Any],
    context: Any,
    *,
    seed: int,
    cfg: float,
    sampler_name: str,
    sigmas: torch.Tensor,
    sampler_options: Mapping[str, Any] | None = None,
    add_noise: bool = True,
    guider: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SamplerCustom / SamplerCustomAdvanced: returns (samples, the last denoised prediction). `guider` (a
    guidance.Guider) brings extra conditionings and its own denoiser for the dual / Perp-Neg rules; CFGGuider and
    BasicGuider take the same path as KSampler."""
    from .sampling_run import sample_with_sigmas
    from .sigma_table import DiscreteModelSampling

    cache = model_cache(context.runtime)
    sampling = DiscreteModelSampling.from_config(model.scheduler_config)
    progress = _progress_callback(context, model)
    last: dict[str, torch.Tensor] = {}

    def callback(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        last["denoised"] = denoised
        progress(step, total, x, denoised)

    positive, negative = _prepare_conditionings(model, positive, negative, latent["samples"])
    extra = guider.extra_conditionings() if guider is not None and guider.kind in ("dual", "perpneg") else {}
    extra = {k: _prepare_conditionings(model, c, None, latent["samples"])[0] for k, c in extra.items()}
    with ExitStack() as stack:
        unet = stack.enter_context(use_model(cache, model))
        _guard_unet(stack, unet, latent["samples"].shape, cfg, context)
        pos = _resolve_controls(stack, cache, positive, unet, model.family)
        neg = _resolve_controls(stack, cache, negative, unet, model.family) if negative is not None else None
        extra = {k: _resolve_controls(stack, cache, c, unet, model.family) for k, c in extra.items()}
        make_denoiser = None
        if extra:
            def make_denoiser(**kwargs: Any):
                return guider.make_denoiser(unet, sampling, pos, neg, extra, **kwargs)

        samples = with_oom_retry(
            cache,
            lambda: sample_with_sigmas(
                unet, sampling, pos, neg, latent["samples"] * model.latent_scale, sigmas, seed=seed, cfg=cfg,
                sampler_name=sampler_name, add_noise=add_noise, sampler_options=sampler_options, callback=callback,
                interrupt=_interrupt_check(context), patches=model.cfg_patches, make_denoiser=make_denoiser,
                **_latent_options(model, latent),
            ),
        )
    denoised = last["denoised"].detach().float().cpu() if "denoised" in last else samples
    return samples / model.latent_scale, denoised / model.latent_scale


def noise_schedule(model: ModelHandle, scheduler: str, steps: int, denoise: float, beta_schedule: str) -> torch.Tensor:
    """NoiseSchedule: sigmas for `steps` steps (denoise < 1: the tail of a longer schedule), ending in 0."""
    from .sampling_run import ksampler_sigmas
    from .sigma_table import DiscreteModelSampling

    config = dict(model.scheduler_config)
    if beta_schedule != "model":
        config["beta_schedule"] = beta_schedule
    return ksampler_sigmas(DiscreteModelSampling.from_config(config), scheduler, "euler", steps, denoise)


def switch_step(model: ModelHandle, sampler_name: str, scheduler: str, steps: int, fraction: float) -> int:
    """The step where `fraction` of the denoising is done, counted as diffusers' SDXL pipelines count
    `denoising_end` / `denoising_start`: the first stage takes the steps whose timestep is at or above
    round(T - fraction * T) (T = 1000 training steps), the second stage the rest, on the same schedule.

    A fraction of the schedule is not a fraction of the steps: with 10 "normal" steps, 0.75 gives step 7 (timesteps
    999 ... 333 lie above 250), not round(7.5) = 8; with karras spacing the steps crowd at low noise, so 0.8 falls
    well before 80% of the steps. The comparison is made on sigmas (the timestep is monotonic in sigma and the two
    agree at the integer cutoff), with a 1e-5 relative tolerance so that a step landing exactly on the cutoff
    counts as first stage, as in diffusers, whatever the last bits of a spacing's arithmetic.
    """
    from .sampling_run import ksampler_sigmas
    from .sigma_table import DiscreteModelSampling

    if fraction <= 0:
        return 0
    sampling = DiscreteModelSampling.from_config(model.scheduler_config)
    total = len(sampling.sigmas)
    cutoff = min(total - 1, max(0, int(round(total - (fraction * total)))))  # diffusers' expression, same rounding
    threshold = float(sampling.sigmas[cutoff]) * (1 - 1e-5)
    sigmas = ksampler_sigmas(sampling, scheduler, sampler_name, steps)
    return int((sigmas[:-1] >= threshold).sum())
