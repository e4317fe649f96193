"""The values of custom sampling (NOISE, GUIDER, SAMPLER) and the guidance they configure.

* `SamplerSpec` (SAMPLER): a sampler name with its options (KSamplerSelect gives the defaults, the Sampler* nodes
  set eta, s_noise, solver_type...).
* `NoiseSpec` (NOISE): RandomNoise (the seed's CPU noise, as KSampler draws it) or DisableNoise (zeros, seed 0,
  which also seeds the samplers' own noise, as ComfyUI's does).
* `Guider` (GUIDER): a model and conditionings with a guidance rule: CFGGuider, BasicGuider, DualCFGGuider,
  PerpNegGuider. `make_denoiser` builds the D(x, sigma) the sampler calls.
* CFG patches, attached to a MODEL handle (`ModelHandle.patches`) and applied by the denoiser on the x0 predictions:
  RescaleCFG, CFGZeroStar, CFGNorm, APG, PerturbedAttentionGuidance, SelfAttentionGuidance. A patch has `pre_cfg` (maps the cond / uncond predictions),
  `cfg_function` (replaces the guidance combination) and/or `post_cfg` (maps the guided prediction), the roles of
  ComfyUI's sampler_pre_cfg_function, sampler_cfg_function and sampler_post_cfg_function.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import math

import torch
import torch.nn.functional as F

from .conditioning import Conditioning
from .denoiser import CFGDenoiser, apply_cfg


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class NoiseSpec:
    seed: int = 0
    add: bool = True

    def cache_nbytes(self) -> int:
        return 0


@dataclass(frozen=True)
class Guider:
    """kind: "cfg" (positive, negative, cfg), "basic" (positive only), "dual" (positive = cond1, middle = cond2,
    negative; cfg = cfg_conds, cfg2 = cfg_cond2_negative; nested), "perpneg" (positive, negative, empty; cfg,
    neg_scale)."""

    model: Any  # ModelHandle
    kind: str
    positive: Conditioning
    negative: Conditioning | None = None
    cfg: float = 1.0
    middle: Conditioning | None = None
    empty: Conditioning | None = None
    cfg2: float = 1.0
    neg_scale: float = 1.0
    nested: bool = False

    def cache_nbytes(self) -> int:
        return 0

    def extra_conditionings(self) -> dict[str, Conditioning]:
        return {k: v for k, v in (("middle", self.middle), ("empty", self.empty)) if v is not None}

    def make_denoiser(self, unet, model_sampling, positive, negative, extra: dict[str, Conditioning], *,
                      keep_uncond: bool, patches: Sequence[Any]) -> CFGDenoiser:
        """The denoiser for this guider, from the conditionings as the sampler prepared them."""
        if self.kind == "cfg":
            return CFGDenoiser(unet, model_sampling, positive, negative, self.cfg, keep_uncond=keep_uncond,
                               patches=patches)
        if self.kind == "basic":
            return CFGDenoiser(unet, model_sampling, positive, None, 1.0, patches=patches)
        if self.kind == "dual":
            return DualCFGDenoiser(unet, model_sampling, _single(positive), _single(extra["middle"]),
                                   _single(negative), self.cfg, self.cfg2, self.nested, patches)
        if self.kind == "perpneg":
            return PerpNegDenoiser(unet, model_sampling, _single(positive), _single(negative),
                                   _single(extra["empty"]), self.cfg, self.neg_scale, patches)
        raise ValueError(f"unknown guider kind {self.kind!r}")


def _single(value) -> Conditioning:
    """The one plain prompt of a CONDITIONING (DualCFGGuider and PerpNegGuider take no areas or masks yet)."""
    from .conditioning import entries

    items = entries(value)
    if len(items) != 1 or getattr(items[0], "is_regional", False):
        raise ValueError("DualCFGGuider / PerpNegGuider take one prompt per conditioning, without area, mask or "
                         "timestep range, for now")
    return items[0]


class DualCFGDenoiser(CFGDenoiser):
    """Two positive prompts against one negative in one batched call (DualCFGGuider). "regular":
    negative + (cond2 - negative) * cfg2 + (cond1 - cond2) * cfg1; "nested": cond1 guided against cond2 at cfg1,
    then that against the negative at cfg2."""

    def __init__(self, unet, model_sampling, cond1, cond2, negative, cfg1, cfg2, nested, patches) -> None:
        super().__init__(unet, model_sampling, cond1, negative, cfg1, patches=patches,
                         conditionings=[negative, cond2, cond1])
        self.cfg2, self.nested = float(cfg2), nested

    def _guide(self, x, sigma, predictions):
        negative, middle, positive = predictions
        if self.nested:
            self.uncond_denoised = middle
            text = apply_cfg(self.patches, x, sigma, positive, middle, self.cfg)
            return negative + (text - negative) * self.cfg2
        self.uncond_denoised = negative
        return apply_cfg(self.patches, x, sigma, middle, negative, self.cfg2) + (positive - middle) * self.cfg


class PerpNegDenoiser(CFGDenoiser):
    """Perp-Neg (Armandpour et al. 2023): guidance by the positive direction (from the empty prompt) minus the part
    of the negative direction perpendicular to it, scaled by neg_scale; the projection is over the whole batch, as
    ComfyUI computes it."""

    def __init__(self, unet, model_sampling, positive, negative, empty, cfg, neg_scale, patches) -> None:
        super().__init__(unet, model_sampling, positive, negative, cfg, patches=patches,
                         conditionings=[positive, negative, empty])
        self.neg_scale = float(neg_scale)

    def _guide(self, x, sigma, predictions):
        positive, negative, empty = predictions
        self.uncond_denoised = negative
        denoised = perp_neg(positive, negative, empty, self.neg_scale, self.cfg)
        for patch in self.patches:
            if getattr(patch, "post_cfg", None) is not None:
                denoised = patch.post_cfg(x=x, sigma=sigma, denoised=denoised, cond=positive, uncond=negative,
                                          cfg=self.cfg, denoiser=self)
        return denoised


def perp_neg(positive: torch.Tensor, negative: torch.Tensor, empty: torch.Tensor, neg_scale: float,
             cfg: float) -> torch.Tensor:
    pos = positive - empty
    neg = negative - empty
    perpendicular = neg - (neg * pos).sum() / pos.norm() ** 2 * pos
    return empty + (pos - perpendicular * neg_scale) * cfg


# ---------------------------------------------------------------------------------------------------------------
# CFG patches on a MODEL


def _sigma_view(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


@dataclass(frozen=True)
class RescaleCFG:
    """Lin et al. 2023, "Common diffusion noise schedules and sample steps are flawed", sec. 3.4: guidance done on
    the v-prediction, whose standard deviation is then rescaled towards the conditional one's by `multiplier`."""

    multiplier: float = 0.7
    pre_cfg = None
    post_cfg = None

    def cfg_function(self, *, x, sigma, cond, uncond, cfg, **_):
        s = _sigma_view(sigma, x)
        scale = (s * s + 1.0) ** 0.5
        x_vp = x / (s * s + 1.0)
        # ComfyUI's v-space: v = (x / (1 + s^2) - x0) * sqrt(1 + s^2) / s; linear in x0, so guiding v = guiding x0
        v_cond = (x_vp - cond) * scale / s
        v_uncond = (x_vp - uncond) * scale / s
        v_cfg = v_uncond + (v_cond - v_uncond) * cfg
        dims = tuple(range(1, x.ndim))
        v_rescaled = v_cfg * (v_cond.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True))
        v_final = v_rescaled * self.multiplier + v_cfg * (1.0 - self.multiplier)
        return x_vp - v_final * s / scale


@dataclass(frozen=True)
class CFGZeroStar:
    """CFG-Zero* (Fan et al. 2025): the unconditional prediction's noise is rescaled by the per-sample least-squares
    factor alpha that best matches the conditional noise, i.e. guided + uncond * (alpha - 1) * (1 - cfg)."""

    pre_cfg = None
    cfg_function = None

    def post_cfg(self, *, x, sigma, denoised, cond, uncond, cfg, **_):
        eps_c = (x - cond).flatten(1)
        eps_u = (x - uncond).flatten(1)
        alpha = (eps_c * eps_u).sum(1, keepdim=True) / ((eps_u**2).sum(1, keepdim=True) + 1e-8)
        alpha = alpha.reshape([x.shape[0]] + [1] * (x.ndim - 1))
        return denoised + uncond * (alpha - 1.0) + uncond * (1.0 - alpha) * cfg


@dataclass(frozen=True)
class CFGNorm:
    """Scales the guided prediction down so its per-pixel channel norm never exceeds the conditional one's, times
    `strength`."""

    strength: float = 1.0
    pre_cfg = None
    cfg_function = None

    def post_cfg(self, *, x, sigma, denoised, cond, uncond, cfg, **_):
        scale = (cond.norm(dim=1, keepdim=True) / (denoised.norm(dim=1, keepdim=True) + 1e-8)).clamp(0.0, 1.0)
        return denoised * scale * self.strength


@dataclass(frozen=True)
class APG:
    """Adaptive Projected Guidance (Sadat et al. 2024): the guidance vector (cond - uncond), optionally averaged over
    steps with `momentum` and clipped to L2 norm `norm_threshold`, is split into its parts parallel and orthogonal
    to the conditional prediction; the parallel part is scaled by `eta`. Applied before CFG by replacing the
    conditional prediction, so plain CFG then gives uncond + (cond - uncond) + cfg * guidance' (ComfyUI's formula:
    at eta 1 without clipping that is CFG at cfg + 1)."""

    eta: float = 1.0
    norm_threshold: float = 5.0
    momentum: float = 0.0
    # the running average, reset when sigma goes up (a new sampling run), as ComfyUI's closure does
    state: dict = field(default_factory=dict, hash=False, compare=False)
    cfg_function = None
    post_cfg = None

    def pre_cfg(self, *, x, sigma, cond, uncond, cfg, **_):
        level = float(sigma[0])
        if self.state.get("sigma") is not None and level > self.state["sigma"]:
            self.state.pop("average", None)
        self.state["sigma"] = level
        guidance = cond - uncond
        if self.momentum > 0:
            average = self.state.get("average")
            guidance = guidance if average is None else average * self.momentum + guidance
            self.state["average"] = guidance
        dims = [-1, -2, -3]
        if self.norm_threshold > 0:
            norm = guidance.norm(p=2, dim=dims, keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        unit = torch.nn.functional.normalize(cond, dim=dims)
        parallel = (guidance * unit).sum(dim=dims, keepdim=True) * unit
        modified = (guidance - parallel) + parallel * self.eta
        return uncond + modified + (cond - uncond) / cfg, uncond


@dataclass(frozen=True)
class PerturbedAttentionGuidance:
    """Perturbed-Attention Guidance (Ahn et al. 2024): the conditional prediction is computed again with the
    self-attention of the UNet's middle block replaced by the identity map on its values (output = to_out(to_v(h))),
    and the guided prediction is pushed away from that degraded one by `scale`. Needs the unconditional half even at
    cfg 1, as ComfyUI's post-CFG hook asks."""

    scale: float = 3.0
    needs_uncond = True
    swaps_attention = True  # sets the middle block's attention processors on the shared UNet (ops.use_model)
    pre_cfg = None
    cfg_function = None

    def post_cfg(self, *, x, sigma, denoised, cond, uncond, cfg, denoiser=None, **_):
        if self.scale == 0:
            return denoised
        if not hasattr(denoiser, "predict_positive"):
            raise ValueError("PerturbedAttentionGuidance does not work with area / mask conditioning yet")
        with perturbed_middle_self_attention(denoiser.unet):
            perturbed = denoiser.predict_positive(x, sigma)
        return denoised + (cond - perturbed) * self.scale


class IdentitySelfAttention:
    """A diffusers attention processor whose attention map is the identity: each token keeps its own value."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        residual = hidden_states
        out = attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def perturbed_middle_self_attention(unet):
    """While inside, the self-attention (attn1) of every transformer block in the UNet's middle block is the
    identity map (ComfyUI's PAG patches ("middle", 0), the middle block's attention)."""
    layers = [block.attn1 for attention in getattr(unet.mid_block, "attentions", None) or ()
              for block in attention.transformer_blocks]
    saved = [layer.processor for layer in layers]
    for layer in layers:
        layer.set_processor(IdentitySelfAttention())
    try:
        yield
    finally:
        for layer, processor in zip(layers, saved):
            layer.set_processor(processor)


@dataclass(frozen=True)
class SelfAttentionGuidance:
    """Self-Attention Guidance (Hong et al. 2023): the unconditional prediction is blurred where the middle block's
    self-attention of the unconditional pass concentrates (attention mass above 1 per key), re-noised to the current
    level, and predicted again; the guided prediction is pushed along (blurred - that prediction) by `scale`."""

    scale: float = 0.5
    blur_sigma: float = 2.0
    threshold: float = 1.0
    needs_uncond = True
    pre_cfg = None
    cfg_function = None
    state: dict = field(default_factory=dict, hash=False, compare=False)  # the last recorded attention scores

    @contextmanager
    def during_unet(self, denoiser):
        """Record the unconditional rows' attention probabilities in the middle block's first self-attention."""
        attentions = getattr(denoiser.unet.mid_block, "attentions", None) or ()
        halves = len(denoiser._halves)
        if not attentions or halves < 2:
            yield
            return
        layer = attentions[0].transformer_blocks[0].attn1
        saved = layer.processor
        layer.set_processor(_RecordingSelfAttention(self.state, denoiser.uncond_index, halves))
        try:
            yield
        finally:
            layer.set_processor(saved)

    def post_cfg(self, *, x, sigma, denoised, cond, uncond, cfg, denoiser=None, **_):
        if not hasattr(denoiser, "predict_negative"):
            raise ValueError("SelfAttentionGuidance does not work with area / mask conditioning yet")
        scores = self.state.get("scores")
        if scores is None or min(denoised.shape[2:]) <= 4:  # too small for the blur's padding, as in ComfyUI
            return denoised
        degraded = sag_blur_map(uncond, scores, self.blur_sigma, self.threshold)
        again = denoiser.predict_negative(degraded + x - uncond, sigma)
        return denoised + (degraded - again) * self.scale


class _RecordingSelfAttention:
    """Plain attention with explicit probabilities, keeping those of the unconditional rows."""

    def __init__(self, state: dict, uncond_index: int, halves: int) -> None:
        self.state, self.uncond_index, self.halves = state, uncond_index, halves

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        residual = hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(hidden_states))
        probs = attn.get_attention_scores(query, key, None)  # [batch * heads, tokens, tokens], batch-major
        rows = probs.shape[0] // self.halves
        self.state["scores"] = probs[rows * self.uncond_index : rows * (self.uncond_index + 1)].float()
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def gaussian_blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur per channel with reflected borders."""
    half = (kernel_size - 1) * 0.5
    taps = torch.exp(-0.5 * (torch.linspace(-half, half, kernel_size) / sigma) ** 2)
    taps = (taps / taps.sum()).to(image.device, image.dtype)
    kernel = (taps[:, None] * taps[None, :]).expand(image.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    return F.conv2d(F.pad(image, [pad] * 4, mode="reflect"), kernel, groups=image.shape[-3])


def sag_blur_map(x0: torch.Tensor, scores: torch.Tensor, sigma: float, threshold: float) -> torch.Tensor:
    """x0 blurred (9 taps) where the head-averaged attention a key receives exceeds `threshold`, as a mask on the
    middle block's grid upsampled (nearest) to the latent."""
    tokens = scores.shape[1]
    batch, _, height, width = x0.shape
    mask = scores.reshape(batch, -1, tokens, scores.shape[2]).mean(1).sum(1) > threshold
    ratio = 2 ** (math.ceil(math.sqrt(height * width / tokens)) - 1).bit_length()
    mask = mask.reshape(batch, math.ceil(height / ratio), math.ceil(width / ratio)).unsqueeze(1).to(x0.dtype)
    mask = F.interpolate(mask, (height, width))
    return gaussian_blur(x0, 9, sigma) * mask + x0 * (1 - mask)
