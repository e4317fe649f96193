"""The denoiser samplers call: D(x, sigma) -> x0 around a diffusers UNet2DConditionModel, with CFG and ControlNets.

`CFGDenoiser` does what ComfyUI's CFGGuider + sampling_function do for one positive and one negative conditioning:

* scales the input to the UNet's DDPM scale and picks the timestep (sigma_table.DiscreteModelSampling);
* runs uncond and cond IN ONE BATCHED UNet CALL ([uncond, cond] along the batch) and combines
  uncond + (cond - uncond) * cfg (on the model output, which equals doing it on x0 as ComfyUI does); at cfg == 1
  the uncond half is skipped entirely;
* pads cross-attention contexts of different token counts (long prompts) to their least common multiple by
  repeating each one whole, as ComfyUI does: attention over a repeated context equals attention over the original;
* SDXL-family conditionings (`pooled` set) get `added_cond_kwargs` with `time_ids` defaulting to
  (H, W, 0, 0, H, W) at the latent's pixel size;
* an inpainting UNet gets its extra input channels (`set_concat`, see inpaint.py) after the noisy latent; ControlNets
  see the plain latent;
* ControlNets attached to a conditioning (`ControlSpec`) run when the current sigma lies in their
  [start_percent, end_percent] range, and their residuals (summed over chained ControlNets) go into the UNet call.

The UNet runs on its own device and dtype; x and the returned x0 are float32 on that device.

`interrupt`, when given, is called before and after every model call (ControlNets, UNet) and raises to stop the
run: an interrupt is honoured within one model call, not one sampler step (heun, dpm_2 and the SDE samplers make
two or more calls per step). `interruptible` (below) also stops a call half-way, between the UNet's blocks.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import unclip
from .batching import in_shared_call
from .conditioning import Conditioning, ControlSpec
from .memory import placement
from .sigma_table import DiscreteModelSampling

VAE_SCALE_FACTOR = 8  # pixels per latent cell for the SD-family VAEs
ModelPatch = Any  # an object with `pre_cfg`, `cfg_function` and/or `post_cfg` (see guidance.py)


@dataclass
class _Half:
    """One conditioning prepared for the UNet: the rows of the batched call it fills and its tensors there."""

    conditioning: Conditioning
    embeds: torch.Tensor  # [1, tokens, dim], padded to the common token count
    pooled: torch.Tensor | None
    time_ids: torch.Tensor | None
    class_labels: torch.Tensor | None = None  # unCLIP UNets' image-embedding input (unclip.class_labels)


class CFGDenoiser:
    """D(x, sigma) for a positive / negative conditioning pair at guidance scale `cfg`.

    `negative` may be None only when cfg == 1. `controlnet_calls` / `unet_calls` count model calls (for tests and
    benchmarks). `interrupt()` raises when the run must stop (see the module's docstring).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        model_sampling: DiscreteModelSampling,
        positive: Conditioning,
        negative: Conditioning | None,
        cfg: float,
        *,
        keep_uncond: bool = False,
        patches: Sequence[ModelPatch] = (),
        conditionings: Sequence[Conditioning] | None = None,
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        self.unet = unet
        self.interrupt = interrupt
        self.device, self.dtype = placement(unet)
        self.model_sampling = model_sampling.to(self.device)
        self.cfg = float(cfg)
        # keep_uncond: CFG++ samplers read `uncond_denoised` after each call, so the unconditional half runs even at
        # cfg 1 (ComfyUI's post-CFG hook with its cfg-1 shortcut disabled). patches: the MODEL's CFG patches.
        self.patches = tuple(patches)
        self.keep_uncond = keep_uncond or any(getattr(p, "needs_uncond", False) for p in self.patches)
        keep_uncond = self.keep_uncond
        self.uncond_denoised: torch.Tensor | None = None
        use_uncond = not math.isclose(self.cfg, 1.0) or (keep_uncond and negative is not None)
        if use_uncond and negative is None:
            raise ValueError("a negative conditioning is needed when cfg != 1")
        if conditionings is None:  # guiders with other conditionings (guidance.py) pass theirs, in call order
            conditionings = [negative, positive] if use_uncond else [positive]
        tokens = math.lcm(*(c.embeds.shape[1] for c in conditionings))
        self._halves = [self._prepare(c, tokens) for c in conditionings]
        self._positive = next(h for h in self._halves if h.conditioning is positive)
        # which rows of the batched call are the unconditional half (patches that read the UNet's internals use it)
        self.uncond_index = next((i for i, h in enumerate(self._halves) if h.conditioning is negative), 0)
        self._hints: dict[tuple[int, int, int, int], torch.Tensor] = {}
        self.concat: torch.Tensor | None = None  # extra UNet input channels, rows as in the batched call
        self.unet_calls = 0
        self.controlnet_calls = 0

    def _prepare(self, c: Conditioning, tokens: int) -> _Half:
        embeds = c.embeds.repeat(1, tokens // c.embeds.shape[1], 1)
        to = dict(device=self.device, dtype=self.dtype)
        return _Half(
            conditioning=c,
            embeds=embeds.to(**to),
            pooled=None if (pooled := unclip.pooled_for(c, c.pooled)) is None else pooled.to(**to),
            time_ids=None if c.time_ids is None else c.time_ids.to(**to),
            class_labels=None if (labels := unclip.class_labels(c, self.unet)) is None else labels.to(**to),
        )

    def set_concat(self, build: Callable[[Conditioning], torch.Tensor]) -> None:
        """Give an inpainting UNet its extra input channels: `build(conditioning)` -> [B, k, h, w] per half."""
        self.concat = torch.cat([build(h.conditioning) for h in self._halves]).to(self.device, self.dtype)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 for x at noise level sigma ([B]); x is [B, C, h, w]."""
        out = self._model_outputs(x, sigma)
        n = len(self._halves)
        if n != 2 or self.keep_uncond or self.patches:
            return self._guide(x, sigma, [self.model_sampling.calculate_denoised(sigma, o, x) for o in out.chunk(n)])
        # x0 is affine in the model output at fixed x, so guiding the raw output (eps or v) equals guiding x0;
        # it is also more accurate: x0 = x - sigma * eps subtracts large numbers at high sigma, and the cfg factor
        # would amplify that rounding.
        uncond, cond = out.chunk(2)
        return self.model_sampling.calculate_denoised(sigma, uncond + (cond - uncond) * self.cfg, x)

    def predict_positive(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The positive conditioning's x0 alone, in a UNet call of its own (for patches that re-run the model under
        a modification, e.g. PerturbedAttentionGuidance)."""
        return self._predict_alone(self._positive, x, sigma)

    def predict_negative(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The negative conditioning's x0 alone (SelfAttentionGuidance's pass on the blurred prediction)."""
        return self._predict_alone(self._halves[self.uncond_index], x, sigma)

    def _predict_alone(self, half: _Half, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        halves, self._halves = self._halves, [half]
        try:
            out = self._model_outputs(x, sigma)
        finally:
            self._halves = halves
        return self.model_sampling.calculate_denoised(sigma, out, x)

    def _model_outputs(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The UNet's raw outputs for every prepared conditioning, in one batched call ([n * B, C, h, w])."""
        batch = x.shape[0]
        n = len(self._halves)
        x_in = self.model_sampling.calculate_input(sigma, x).to(self.dtype).repeat(n, 1, 1, 1)
        t = self.model_sampling.timestep(sigma).repeat(n)
        context = torch.cat([_rows(h.embeds, batch) for h in self._halves])
        added = self._added_cond_kwargs(x, batch)
        residuals = self._control_residuals(x_in, t, context, added, float(sigma[0]), batch)
        # only unCLIP UNets take class labels; other calls keep the plain signature (batching.py stacks those)
        labels = {} if self._halves[0].class_labels is None else {
            "class_labels": torch.cat([_rows(h.class_labels, batch) for h in self._halves])}

        self.check_interrupt()
        self.unet_calls += 1
        with ExitStack() as hooks:  # patches that watch or change the UNet during its call (SelfAttentionGuidance)
            for patch in self.patches:
                if getattr(patch, "during_unet", None) is not None:
                    hooks.enter_context(patch.during_unet(self))
            extra = self._gligen(x_in.shape) if n == 1 and self._halves[0].conditioning.gligen else {}
            out = self.unet(
                x_in if self.concat is None else torch.cat([x_in, self.concat], dim=1),
                t,
                encoder_hidden_states=context,
                added_cond_kwargs=added,
                down_block_additional_residuals=residuals[0] if residuals else None,
                mid_block_additional_residual=residuals[1] if residuals else None,
                return_dict=False,
                **labels,
                **extra,
            )[0].float()
        self.check_interrupt()
        return out

    def _gligen(self, shape: torch.Size) -> dict:
        """GLIGENTextBoxApply's boxes for a call of the one conditioning that carries them (gligen.py; the sampler
        put the pinned GLIGEN model in place of its handle); a conditioning with boxes always runs alone
        (regions.py), as in ComfyUI."""
        from .gligen import unet_kwargs

        model, boxes = self._halves[0].conditioning.gligen
        return unet_kwargs(self.unet, model, boxes, shape)

    def _guide(self, x: torch.Tensor, sigma: torch.Tensor, predictions: list[torch.Tensor]) -> torch.Tensor:
        """Combine the per-conditioning x0 predictions (in call order) into the guided x0, with the MODEL's CFG
        patches. With one prediction (cfg 1, BasicGuider) that prediction is also the unconditional one."""
        if len(predictions) == 1:
            self.uncond_denoised = predictions[0]
            return predictions[0]
        uncond, cond = predictions
        self.uncond_denoised = uncond
        return apply_cfg(self.patches, x, sigma, cond, uncond, self.cfg, denoiser=self)

    def check_interrupt(self) -> None:
        """The one place the denoiser honours an interrupt: between model calls, never inside one."""
        if self.interrupt is not None:
            self.interrupt()

    def _added_cond_kwargs(self, x: torch.Tensor, batch: int) -> dict[str, torch.Tensor] | None:
        """SDXL's extra conditioning (pooled text embeds and size/crop time ids), or None for SD1/SD2 models."""
        if self._halves[0].pooled is None:
            return None
        height, width = x.shape[-2] * VAE_SCALE_FACTOR, x.shape[-1] * VAE_SCALE_FACTOR
        default_ids = torch.tensor([[height, width, 0, 0, height, width]], device=self.device, dtype=self.dtype)
        return {
            "text_embeds": torch.cat([_rows(h.pooled, batch) for h in self._halves]),
            "time_ids": torch.cat(
                [_rows(default_ids if h.time_ids is None else h.time_ids, batch) for h in self._halves]
            ),
        }

    # ------------------------------------------------------------------------------------------------------------
    # ControlNet

    def _control_residuals(
        self,
        x_in: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        added: dict[str, torch.Tensor] | None,
        sigma: float,
        batch: int,
    ) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """Summed down/mid residuals of the ControlNets active at `sigma`, for the whole batched call.

        Halves (uncond / cond) whose active ControlNets are the same (same model, hint, strength and range: what
        applying one ControlNet to both conditionings gives) run together in one ControlNet call; a half without
        active ControlNets gets zero residuals.
        """
        groups: dict[tuple, list[int]] = {}
        for index, half in enumerate(self._halves):
            active = tuple(c for c in half.conditioning.controls if self._is_active(c, sigma))
            if active:
                groups.setdefault(tuple(_control_key(c) for c in active), []).append(index)
        if not groups:
            return None

        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for indices in groups.values():
            rows = torch.cat([torch.arange(i * batch, (i + 1) * batch) for i in indices]).to(self.device)
            controls = [c for c in self._halves[indices[0]].conditioning.controls if self._is_active(c, sigma)]
            for control in controls:
                group_added = None if added is None else {k: v[rows] for k, v in added.items()}
                self.check_interrupt()
                self.controlnet_calls += 1
                d, m = control.controlnet(
                    x_in[rows],
                    t[rows],
                    encoder_hidden_states=context[rows],
                    controlnet_cond=self._hint(control, x_in, len(rows)),
                    conditioning_scale=control.strength,
                    added_cond_kwargs=group_added,
                    return_dict=False,
                )
                if down is None:
                    down = [x_in.new_zeros((x_in.shape[0], *r.shape[1:])) for r in d]
                    mid = x_in.new_zeros((x_in.shape[0], *m.shape[1:]))
                for total, r in zip(down, d):
                    total[rows] += r
                mid[rows] += m
        return down, mid

    def _is_active(self, control: ControlSpec, sigma: float) -> bool:
        """ComfyUI's gating: the ControlNet acts while sigma lies between the sigmas of its start and end percent."""
        high = self.model_sampling.percent_to_sigma(control.start_percent)
        low = self.model_sampling.percent_to_sigma(control.end_percent)
        return low <= sigma <= high

    def _hint(self, control: ControlSpec, x_in: torch.Tensor, rows: int) -> torch.Tensor:
        """The control image as [rows, 3, H, W] at the latent's pixel size, cached per ControlSpec and size."""
        height, width = x_in.shape[-2] * VAE_SCALE_FACTOR, x_in.shape[-1] * VAE_SCALE_FACTOR
        key = (id(control), height, width, rows)
        if key not in self._hints:
            hint = _resize_cover(control.hint.movedim(-1, 1).float(), height, width)
            repeats = -(-rows // hint.shape[0])  # one hint per sample, cycled over the batched halves
            self._hints[key] = hint.repeat(repeats, 1, 1, 1)[:rows].to(self.device, control.controlnet.dtype)
        return self._hints[key]


def apply_cfg(
    patches: Sequence[ModelPatch], x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
    cfg: float,
    denoiser: Any = None,
) -> torch.Tensor:
    """Classifier-free guidance on x0, as ComfyUI's cfg_function: `pre_cfg` patches first map the (cond, uncond)
    predictions, a patch's `cfg_function` (the last one set) replaces uncond + (cond - uncond) * cfg, then every
    `post_cfg` patch maps the result in turn."""
    for patch in patches:
        if getattr(patch, "pre_cfg", None) is not None:
            cond, uncond = patch.pre_cfg(x=x, sigma=sigma, cond=cond, uncond=uncond, cfg=cfg, denoiser=denoiser)
    combine = [p for p in patches if getattr(p, "cfg_function", None) is not None]
    if combine:
        denoised = combine[-1].cfg_function(x=x, sigma=sigma, cond=cond, uncond=uncond, cfg=cfg, denoiser=denoiser)
    else:
        denoised = uncond + (cond - uncond) * cfg
    for patch in patches:
        if getattr(patch, "post_cfg", None) is not None:
            denoised = patch.post_cfg(x=x, sigma=sigma, denoised=denoised, cond=cond, uncond=uncond, cfg=cfg,
                                      denoiser=denoiser)
    return denoised


def _control_key(control: ControlSpec) -> tuple:
    return (id(control.controlnet), id(control.hint), control.strength, control.start_percent, control.end_percent)


def _rows(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a per-prompt tensor ([1, ...] or [batch, ...]) to `batch` rows."""
    return t if t.shape[0] == batch else t.repeat(batch // t.shape[0], *([1] * (t.ndim - 1)))


def _resize_cover(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Center-crop [B, C, H, W] to the target aspect ratio, then resize with nearest-exact (as ComfyUI does for
    ControlNet hints); returned unchanged when already at size."""
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    if w * height > h * width:  # too wide
        new_w = round(h * width / height)
        image = image[..., :, (w - new_w) // 2 : (w - new_w) // 2 + new_w]
    elif w * height < h * width:  # too tall
        new_h = round(w * height / width)
        image = image[..., (h - new_h) // 2 : (h - new_h) // 2 + new_h, :]
    return F.interpolate(image, size=(height, width), mode="nearest-exact")


# Where a UNet (or anything shaped like one) can be stopped in the middle of its forward pass: before each of its
# top-level blocks. One UNet call at a large size can take minutes on a CPU; the sampler's per-step callback alone
# would only see an interrupt after it.
INTERRUPTIBLE_BLOCKS = ("down_blocks", "mid_block", "up_blocks")


@contextmanager
def interruptible(model: torch.nn.Module, check: Callable[[], None]) -> Iterator[None]:
    """While inside, `check()` runs before each top-level block of `model`'s forward; it stops the call by raising
    (e.g. NodeContext.check_interrupted raising Interrupted). Models without such blocks run unchanged."""
    blocks: list[torch.nn.Module] = []
    for name in INTERRUPTIBLE_BLOCKS:
        part = getattr(model, name, None)
        if isinstance(part, torch.nn.ModuleList):
            blocks.extend(part)
        elif isinstance(part, torch.nn.Module):
            blocks.append(part)
    # The hooks sit on the shared module: with prompts running side by side (`serve --concurrency`) they must act
    # only for the thread that set them, and not inside a forward shared by several prompts (batching.py).
    owner = threading.get_ident()

    def hook(_module: torch.nn.Module, _args: Any) -> None:
        if threading.get_ident() == owner and not in_shared_call():
            check()

    handles = [block.register_forward_pre_hook(hook) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
