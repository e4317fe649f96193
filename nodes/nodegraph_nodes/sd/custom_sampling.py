"""ComfyUI's custom-sampling nodes: NOISE, GUIDER, SAMPLER and SIGMAS values and the nodes that make, edit and
use them (comfy_extras/nodes_custom_sampler.py and friends), plus the CFG patches on a MODEL (RescaleCFG,
CFGZeroStar, CFGNorm).

SamplerCustomAdvanced(RandomNoise, CFGGuider, KSamplerSelect, BasicScheduler) runs exactly KSampler's computation
(the same noise, starting point, denoiser and sampler), so it gives KSampler's latent bit for bit.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace

from nodegraph.engine import MAX_SEED, Boolean, Combo, Float, Input, Int, Node, Output, String

from .sampler_nodes import cfg_input

_SIGMA_MAX, _SIGMA_MIN = 14.614642, 0.0291675  # SD1's schedule: the scheduler nodes' defaults


def _spec(sampler):
    from ..diffusion.guidance import SamplerSpec

    return sampler if isinstance(sampler, SamplerSpec) else SamplerSpec(str(sampler))


def _sampler(name: str, **options):
    from ..diffusion.guidance import SamplerSpec

    return (SamplerSpec(name, options),)


# --- noise ------------------------------------------------------------------------------------------------------


class RandomNoise(Node):
    """Noise from a seed: the CPU-seeded Gaussian noise KSampler draws (the seed also seeds the sampler's own noise)."""

    category = "sampling/custom_sampling/noise"
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    outputs = (Output("NOISE"),)

    def execute(self, noise_seed):
        from ..diffusion.guidance import NoiseSpec

        return (NoiseSpec(noise_seed, add=True),)


class DisableNoise(Node):
    """No initial noise (to continue from a latent that still holds noise); the sampler's own noise uses seed 0."""

    category = "sampling/custom_sampling/noise"
    outputs = (Output("NOISE"),)

    def execute(self):
        from ..diffusion.guidance import NoiseSpec

        return (NoiseSpec(0, add=False),)


# --- guiders ----------------------------------------------------------------------------------------------------


class CFGGuider(Node):
    """Classifier-free guidance of a model between a positive and a negative conditioning."""

    display_name = "CFG Guider"
    category = "sampling/custom_sampling/guiders"
    model = Input("MODEL")
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    cfg = cfg_input()
    outputs = (Output("GUIDER"),)

    def execute(self, model, positive, negative, cfg):
        from ..diffusion.guidance import Guider

        return (Guider(model, "cfg", positive, negative, cfg),)


class BasicGuider(Node):
    """The model's prediction for one conditioning, without guidance (for distilled models)."""

    display_name = "Basic Guider"
    category = "sampling/custom_sampling/guiders"
    model = Input("MODEL")
    conditioning = Input("CONDITIONING")
    outputs = (Output("GUIDER"),)

    def execute(self, model, conditioning):
        from ..diffusion.guidance import Guider

        return (Guider(model, "basic", conditioning),)


class DualCFGGuider(Node):
    """Two positive conditionings against a negative: cond1 guided against cond2 (cfg_conds) and cond2 against the
    negative (cfg_cond2_negative), added ("regular") or one inside the other ("nested")."""

    display_name = "Dual CFG Guider"
    category = "sampling/custom_sampling/guiders"
    model = Input("MODEL")
    cond1 = Input("CONDITIONING")
    cond2 = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    cfg_conds = cfg_input()
    cfg_cond2_negative = cfg_input()
    style = Combo(["regular", "nested"])
    outputs = (Output("GUIDER"),)

    def execute(self, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style="regular"):
        from ..diffusion.guidance import Guider

        return (Guider(model, "dual", cond1, negative, cfg_conds, middle=cond2, cfg2=cfg_cond2_negative,
                       nested=style == "nested"),)


class PerpNegGuider(Node):
    """Perp-Neg guidance: the negative prompt only removes what is perpendicular to the positive direction, both
    measured from an empty prompt."""

    category = "_for_testing"
    experimental = True
    model = Input("MODEL")
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    empty_conditioning = Input("CONDITIONING")
    cfg = cfg_input()
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("GUIDER"),)

    def execute(self, model, positive, negative, empty_conditioning, cfg, neg_scale):
        from ..diffusion.guidance import Guider

        return (Guider(model, "perpneg", positive, negative, cfg, empty=empty_conditioning, neg_scale=neg_scale),)


# --- samplers ---------------------------------------------------------------------------------------------------


def _eta(maximum: float = 100.0) -> Float:
    return Float(1.0, min=0.0, max=maximum, step=0.01, round=False)


def _s_noise(maximum: float = 100.0) -> Float:
    return Float(1.0, min=0.0, max=maximum, step=0.01, round=False)


class SamplerEulerAncestral(Node):
    category = "sampling/custom_sampling/samplers"
    eta = _eta()
    s_noise = _s_noise()
    outputs = (Output("SAMPLER"),)

    def execute(self, eta, s_noise):
        return _sampler("euler_ancestral", eta=eta, s_noise=s_noise)


class SamplerEulerAncestralCFGPP(Node):
    display_name = "SamplerEulerAncestralCFG++"
    category = "sampling/custom_sampling/samplers"
    eta = _eta(1.0)
    s_noise = _s_noise(10.0)
    outputs = (Output("SAMPLER"),)

    def execute(self, eta, s_noise):
        return _sampler("euler_ancestral_cfg_pp", eta=eta, s_noise=s_noise)


class SamplerLMS(Node):
    category = "sampling/custom_sampling/samplers"
    order = Int(4, min=1, max=100)
    outputs = (Output("SAMPLER"),)

    def execute(self, order):
        return _sampler("lms", order=order)


def _noise_device() -> Combo:
    return Combo(["gpu", "cpu"])


class SamplerDPMPP_3M_SDE(Node):
    category = "sampling/custom_sampling/samplers"
    eta = _eta()
    s_noise = _s_noise()
    noise_device = _noise_device()
    outputs = (Output("SAMPLER"),)

    def execute(self, eta, s_noise, noise_device):
        name = "dpmpp_3m_sde" if noise_device == "cpu" else "dpmpp_3m_sde_gpu"
        return _sampler(name, eta=eta, s_noise=s_noise)


class SamplerDPMPP_2M_SDE(Node):
    category = "sampling/custom_sampling/samplers"
    solver_type = Combo(["midpoint", "heun"])
    eta = _eta()
    s_noise = _s_noise()
    noise_device = _noise_device()
    outputs = (Output("SAMPLER"),)

    def execute(self, solver_type, eta, s_noise, noise_device):
        name = "dpmpp_2m_sde" if noise_device == "cpu" else "dpmpp_2m_sde_gpu"
        return _sampler(name, eta=eta, s_noise=s_noise, solver_type=solver_type)


class SamplerDPMPP_SDE(Node):
    category = "sampling/custom_sampling/samplers"
    eta = _eta()
    s_noise = _s_noise()
    r = Float(0.5, min=0.0, max=100.0, step=0.01, round=False)
    noise_device = _noise_device()
    outputs = (Output("SAMPLER"),)

    def execute(self, eta, s_noise, r, noise_device):
        name = "dpmpp_sde" if noise_device == "cpu" else "dpmpp_sde_gpu"
        return _sampler(name, eta=eta, s_noise=s_noise, r=r)


class SamplerDPMPP_2S_Ancestral(Node):
    category = "sampling/custom_sampling/samplers"
    eta = _eta()
    s_noise = _s_noise()
    outputs = (Output("SAMPLER"),)

    def execute(self, eta, s_noise):
        return _sampler("dpmpp_2s_ancestral", eta=eta, s_noise=s_noise)


class SamplerDPMAdaptative(Node):
    category = "sampling/custom_sampling/samplers"
    order = Int(3, min=2, max=3)
    rtol = Float(0.05, min=0.0, max=100.0, step=0.01, round=False)
    atol = Float(0.0078, min=0.0, max=100.0, step=0.01, round=False)
    h_init = Float(0.05, min=0.0, max=100.0, step=0.01, round=False)
    pcoeff = Float(0.0, min=0.0, max=100.0, step=0.01, round=False)
    icoeff = Float(1.0, min=0.0, max=100.0, step=0.01, round=False)
    dcoeff = Float(0.0, min=0.0, max=100.0, step=0.01, round=False)
    accept_safety = Float(0.81, min=0.0, max=100.0, step=0.01, round=False)
    eta = Float(0.0, min=0.0, max=100.0, step=0.01, round=False)
    s_noise = _s_noise()
    outputs = (Output("SAMPLER"),)

    def execute(self, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta, s_noise):
        return _sampler("dpm_adaptive", order=order, rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff,
                        icoeff=icoeff, dcoeff=dcoeff, accept_safety=accept_safety, eta=eta, s_noise=s_noise)


class SamplerER_SDE(Node):
    """ER-SDE with its noise scale function: the paper's ER-SDE choice, the reverse-time SDE's lambda^(eta+1), or
    the ODE (no noise)."""

    category = "sampling/custom_sampling/samplers"
    solver_type = Combo(["ER-SDE", "Reverse-time SDE", "ODE"])
    max_stage = Int(3, min=1, max=3)
    eta = Float(1.0, min=0.0, max=100.0, step=0.01, round=False,
                tooltip="Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to deterministic ODE. "
                        "This setting doesn't apply to ER-SDE solver type.")
    s_noise = _s_noise()
    outputs = (Output("SAMPLER"),)

    def execute(self, solver_type, max_stage, eta, s_noise):
        from functools import partial

        from ..diffusion.samplers_sde import reverse_time_sde_noise_scaler

        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        scaler = None if solver_type == "ER-SDE" else partial(reverse_time_sde_noise_scaler, eta=eta)
        return _sampler("er_sde", s_noise=s_noise, noise_scaler=scaler, max_stage=max_stage)


class SamplerSASolver(Node):
    """SA-Solver with its stochastic interval given as fractions of the model's schedule."""

    category = "sampling/custom_sampling/samplers"
    model = Input("MODEL")
    eta = Float(1.0, min=0.0, max=10.0, step=0.01, round=False)
    sde_start_percent = Float(0.2, min=0.0, max=1.0, step=0.001)
    sde_end_percent = Float(0.8, min=0.0, max=1.0, step=0.001)
    s_noise = _s_noise()
    predictor_order = Int(3, min=1, max=6)
    corrector_order = Int(4, min=0, max=6)
    use_pece = Boolean(False)
    simple_order_2 = Boolean(False)
    outputs = (Output("SAMPLER"),)

    def execute(self, model, eta, sde_start_percent, sde_end_percent, s_noise, predictor_order, corrector_order,
                use_pece, simple_order_2):
        from ..diffusion.sigma_table import DiscreteModelSampling
        from ..diffusion.samplers_sde import sa_solver_tau

        sampling = DiscreteModelSampling.from_config(model.scheduler_config)
        tau = sa_solver_tau(sampling.percent_to_sigma(sde_start_percent), sampling.percent_to_sigma(sde_end_percent),
                            eta)
        return _sampler("sa_solver", tau_func=tau, s_noise=s_noise, predictor_order=predictor_order,
                        corrector_order=corrector_order, use_pece=use_pece, simple_order_2=simple_order_2)


# --- schedulers -------------------------------------------------------------------------------------------------


def _sigma_max() -> Float:
    return Float(_SIGMA_MAX, min=0.0, max=5000.0, step=0.01, round=False)


def _sigma_min() -> Float:
    return Float(_SIGMA_MIN, min=0.0, max=5000.0, step=0.01, round=False)


def _steps(default: int = 20, maximum: int = 10000) -> Int:
    return Int(default, min=1, max=maximum)


class KarrasScheduler(Node):
    category = "sampling/custom_sampling/schedulers"
    steps = _steps()
    sigma_max = _sigma_max()
    sigma_min = _sigma_min()
    rho = Float(7.0, min=0.0, max=100.0, step=0.01, round=False)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps, sigma_max, sigma_min, rho):
        from ..diffusion.schedules import karras_sigmas

        return (karras_sigmas(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    category = "sampling/custom_sampling/schedulers"
    steps = _steps()
    sigma_max = _sigma_max()
    sigma_min = _sigma_min()
    outputs = (Output("SIGMAS"),)

    def execute(self, steps, sigma_max, sigma_min):
        from ..diffusion.schedules import exponential_sigmas

        return (exponential_sigmas(steps, sigma_min, sigma_max),)


class PolyexponentialScheduler(Node):
    category = "sampling/custom_sampling/schedulers"
    steps = _steps()
    sigma_max = _sigma_max()
    sigma_min = _sigma_min()
    rho = Float(1.0, min=0.0, max=100.0, step=0.01, round=False)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps, sigma_max, sigma_min, rho):
        from ..diffusion.schedules import polyexponential_sigmas

        return (polyexponential_sigmas(steps, sigma_min, sigma_max, rho),)


class LaplaceScheduler(Node):
    category = "sampling/custom_sampling/schedulers"
    steps = _steps()
    sigma_max = _sigma_max()
    sigma_min = _sigma_min()
    mu = Float(0.0, min=-10.0, max=10.0, step=0.1, round=False)
    beta = Float(0.5, min=0.0, max=10.0, step=0.1, round=False)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps, sigma_max, sigma_min, mu, beta):
        from ..diffusion.schedules import laplace_sigmas

        return (laplace_sigmas(steps, sigma_min, sigma_max, mu, beta),)


class VPScheduler(Node):
    category = "sampling/custom_sampling/schedulers"
    steps = _steps()
    beta_d = Float(19.9, min=0.0, max=5000.0, step=0.01, round=False)
    beta_min = Float(0.1, min=0.0, max=5000.0, step=0.01, round=False)
    eps_s = Float(0.001, min=0.0, max=1.0, step=0.0001, round=False)
    outputs = (Output("SIGMAS"),)

    def execute(self, steps, beta_d, beta_min, eps_s):
        from ..diffusion.schedules import vp_sigmas

        return (vp_sigmas(steps, beta_d, beta_min, eps_s),)


class BetaSamplingScheduler(Node):
    category = "sampling/custom_sampling/schedulers"
    model = Input("MODEL")
    steps = _steps()
    alpha = Float(0.6, min=0.0, max=50.0, step=0.01, round=False)
    beta = Float(0.6, min=0.0, max=50.0, step=0.01, round=False)
    outputs = (Output("SIGMAS"),)

    def execute(self, model, steps, alpha, beta):
        from ..diffusion.sigma_table import DiscreteModelSampling
        from ..diffusion.schedules import beta_sigmas

        return (beta_sigmas(DiscreteModelSampling.from_config(model.scheduler_config), steps, alpha, beta),)


class SDTurboScheduler(Node):
    """SD-Turbo's schedule: timesteps 999, 899, ... (up to 10), starting lower for denoise < 1."""

    category = "sampling/custom_sampling/schedulers"
    model = Input("MODEL")
    steps = Int(1, min=1, max=10)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, model, steps, denoise):
        import torch

        from ..diffusion.sigma_table import DiscreteModelSampling

        start = 10 - int(10 * denoise)
        timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
        sigmas = DiscreteModelSampling.from_config(model.scheduler_config).sigma(timesteps).float()
        return (torch.cat([sigmas, sigmas.new_zeros(1)]),)


class AlignYourStepsScheduler(Node):
    """NVIDIA's "Align Your Steps" noise levels for SD1, SDXL or SVD, interpolated to `steps`."""

    category = "sampling/custom_sampling/schedulers"
    model_type = Combo(["SD1", "SDXL", "SVD"])
    steps = Int(10, min=1, max=10000)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, model_type, steps, denoise):
        from ..diffusion.schedules import align_your_steps_sigmas

        return (align_your_steps_sigmas(model_type, steps, denoise),)


# --- sigmas -----------------------------------------------------------------------------------------------------


class SplitSigmas(Node):
    """Split a schedule at a step: high_sigmas up to and including it, low_sigmas from it on (for two-stage
    sampling, the way KSamplerAdvanced's end_at_step / start_at_step split)."""

    category = "sampling/custom_sampling/sigmas"
    sigmas = Input("SIGMAS")
    step = Int(0, min=0, max=10000)
    outputs = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def execute(self, sigmas, step):
        return (sigmas[:step + 1], sigmas[step:])


class SplitSigmasDenoise(Node):
    """Split a schedule so that the low part has round(steps * denoise) steps."""

    category = "sampling/custom_sampling/sigmas"
    sigmas = Input("SIGMAS")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def execute(self, sigmas, denoise):
        steps = max(sigmas.shape[-1] - 1, 0)
        total = round(steps * denoise)
        # total = 0 gives ComfyUI's sigmas[:-0] (empty high part) and the last sigma alone as the low part
        return (sigmas[:-total] if total else sigmas[:0], sigmas[-(total + 1):])


class FlipSigmas(Node):
    """Reverse a schedule (for inversion); a leading 0 becomes 0.0001 so that the first step is defined."""

    category = "sampling/custom_sampling/sigmas"
    sigmas = Input("SIGMAS")
    outputs = (Output("SIGMAS"),)

    def execute(self, sigmas):
        if len(sigmas) == 0:
            return (sigmas,)
        flipped = sigmas.flip(0)
        if flipped[0] == 0:
            flipped[0] = 0.0001
        return (flipped,)


class SetFirstSigma(Node):
    category = "sampling/custom_sampling/sigmas"
    sigmas = Input("SIGMAS")
    sigma = Float(136.0, min=0.0, max=20000.0, step=0.001, round=False)
    outputs = (Output("SIGMAS"),)

    def execute(self, sigmas, sigma):
        sigmas = sigmas.clone()
        sigmas[0] = sigma
        return (sigmas,)


class ExtendIntermediateSigmas(Node):
    """Insert steps - 1 sigmas between each pair whose upper sigma lies in [end_at_sigma, start_at_sigma] (-1: no
    upper bound), spaced linearly, or eased by a quarter sine / cosine."""

    category = "sampling/custom_sampling/sigmas"
    sigmas = Input("SIGMAS")
    steps = Int(2, min=1, max=100)
    start_at_sigma = Float(-1.0, min=-1.0, max=20000.0, step=0.01, round=False)
    end_at_sigma = Float(12.0, min=0.0, max=20000.0, step=0.01, round=False)
    spacing = Combo(["linear", "cosine", "sine"])
    outputs = (Output("SIGMAS"),)

    def execute(self, sigmas, steps, start_at_sigma, end_at_sigma, spacing):
        import torch

        upper = math.inf if start_at_sigma < 0 else start_at_sigma
        ramp = torch.linspace(0, 1, steps + 1)[1:-1]
        ramp = {"linear": ramp, "cosine": torch.sin(ramp * math.pi / 2),
                "sine": 1 - torch.cos(ramp * math.pi / 2)}[spacing]
        out: list[float] = []
        for i in range(len(sigmas) - 1):
            current, following = sigmas[i], sigmas[i + 1]
            out.append(float(current))
            if end_at_sigma <= current <= upper:
                out.extend((ramp * (following - current) + current).tolist())
        if len(sigmas) > 0:
            out.append(float(sigmas[-1]))
        return (torch.tensor(out, dtype=torch.float32),)


class ManualSigmas(Node):
    """A schedule typed as numbers (any separators)."""

    category = "_for_testing/custom_sampling"
    experimental = True
    sigmas = String("1, 0.5")
    outputs = (Output("SIGMAS"),)

    def execute(self, sigmas):
        import torch

        numbers = [float(v) for v in re.findall(r"[-+]?(?:\d*\.*\d+)", sigmas)]
        return (torch.tensor(numbers, dtype=torch.float32),)


class SamplingPercentToSigma(Node):
    """The sigma at a fraction of the model's schedule (0 = start, 1 = end)."""

    category = "sampling/custom_sampling/sigmas"
    model = Input("MODEL")
    sampling_percent = Float(0.0, min=0.0, max=1.0, step=0.0001)
    return_actual_sigma = Boolean(False, tooltip="Return the actual sigma value instead of the value used for "
                                                 "interval checks.\nThis only affects results at 0.0 and 1.0.")
    outputs = (Output("FLOAT", "sigma_value"),)

    def execute(self, model, sampling_percent, return_actual_sigma):
        from ..diffusion.sigma_table import DiscreteModelSampling

        sampling = DiscreteModelSampling.from_config(model.scheduler_config)
        value = sampling.percent_to_sigma(sampling_percent)
        if return_actual_sigma and sampling_percent == 0.0:
            value = sampling.sigma_max
        elif return_actual_sigma and sampling_percent == 1.0:
            value = sampling.sigma_min
        return (float(value),)


# --- sampling ---------------------------------------------------------------------------------------------------


class SamplerCustomAdvanced(Node):
    """Sample with noise, a guider, a sampler and sigmas chosen by other nodes."""

    category = "sampling/custom_sampling"
    noise = Input("NOISE")
    guider = Input("GUIDER")
    sampler = Input("SAMPLER")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    outputs = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    def execute(self, noise, guider, sampler, sigmas, latent_image):
        from ..diffusion import ops

        spec = _spec(sampler)
        samples, denoised = ops.sample_custom(
            guider.model, guider.positive, guider.negative, latent_image, self.context,
            guider=guider, seed=noise.seed, cfg=guider.cfg, sampler_name=spec.name, sampler_options=spec.options,
            sigmas=sigmas, add_noise=noise.add,
        )
        return ({**latent_image, "samples": samples}, {**latent_image, "samples": denoised})


class AddNoise(Node):
    """Add a NOISE's noise to a latent at the size of a schedule's span (|first - last sigma|), in the model's
    latent space, without sampling."""

    category = "_for_testing/custom_sampling/noise"
    experimental = True
    model = Input("MODEL")
    noise = Input("NOISE")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    outputs = (Output("LATENT"),)

    def execute(self, model, noise, sigmas, latent_image):
        import torch

        from ..diffusion.sampling_run import prepare_noise

        if len(sigmas) == 0:
            return (latent_image,)
        samples = latent_image["samples"].float()
        drawn = (prepare_noise(samples, noise.seed, latent_image.get("batch_index")) if noise.add
                 else torch.zeros_like(samples))
        scale = abs(float(sigmas[0]) - float(sigmas[-1])) if len(sigmas) > 1 else float(sigmas[0])
        if torch.count_nonzero(samples) > 0:  # an empty latent is not moved into the model's space, as in ComfyUI
            samples = samples * model.latent_scale
        noisy = torch.nan_to_num((samples + drawn * scale) / model.latent_scale, nan=0.0, posinf=0.0, neginf=0.0)
        return ({**latent_image, "samples": noisy},)


# --- CFG patches ------------------------------------------------------------------------------------------------


def _patched(model, patch):
    return (replace(model, cfg_patches=model.cfg_patches + (patch,)),)


class RescaleCFG(Node):
    category = "advanced/model"
    model = Input("MODEL")
    multiplier = Float(0.7, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MODEL"),)

    def execute(self, model, multiplier):
        from ..diffusion.guidance import RescaleCFG as Patch

        return _patched(model, Patch(multiplier))


class CFGZeroStar(Node):
    category = "advanced/guidance"
    model = Input("MODEL")
    outputs = (Output("MODEL", "patched_model"),)

    def execute(self, model):
        from ..diffusion.guidance import CFGZeroStar as Patch

        return _patched(model, Patch())


class CFGNorm(Node):
    category = "advanced/guidance"
    experimental = True
    model = Input("MODEL")
    strength = Float(1.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("MODEL", "patched_model"),)

    def execute(self, model, strength):
        from ..diffusion.guidance import CFGNorm as Patch

        return _patched(model, Patch(strength))


class APG(Node):
    display_name = "Adaptive Projected Guidance"
    category = "sampling/custom_sampling"
    model = Input("MODEL")
    eta = Float(1.0, min=-10.0, max=10.0, step=0.01,
                tooltip="Controls the scale of the parallel guidance vector. Default CFG behavior at a setting of 1.")
    norm_threshold = Float(5.0, min=0.0, max=50.0, step=0.1,
                           tooltip="Normalize guidance vector to this value, normalization disable at a setting of 0.")
    momentum = Float(0.0, min=0.0, max=1.0, step=0.01,
                     tooltip="Controls a running average of guidance during diffusion, disabled at a setting of 0.")
    outputs = (Output("MODEL"),)

    def execute(self, model, eta, norm_threshold, momentum):
        from ..diffusion.guidance import APG as Patch

        return _patched(model, Patch(eta, norm_threshold, momentum))


class PerturbedAttentionGuidance(Node):
    category = "_for_testing"
    model = Input("MODEL")
    scale = Float(3.0, min=0.0, max=100.0, step=0.1, round=0.01)
    outputs = (Output("MODEL"),)

    def execute(self, model, scale):
        from ..diffusion.guidance import PerturbedAttentionGuidance as Patch

        return _patched(model, Patch(scale))


class SelfAttentionGuidance(Node):
    display_name = "Self-Attention Guidance"
    category = "_for_testing"
    model = Input("MODEL")
    scale = Float(0.5, min=-2.0, max=5.0, step=0.01)
    blur_sigma = Float(2.0, min=0.0, max=10.0, step=0.1)
    outputs = (Output("MODEL"),)

    def execute(self, model, scale, blur_sigma):
        from ..diffusion.guidance import SelfAttentionGuidance as Patch

        return _patched(model, Patch(scale, blur_sigma))


NODES = [
    RandomNoise, DisableNoise, CFGGuider, BasicGuider, DualCFGGuider, PerpNegGuider,
    SamplerEulerAncestral, SamplerEulerAncestralCFGPP, SamplerLMS, SamplerDPMPP_3M_SDE, SamplerDPMPP_2M_SDE,
    SamplerDPMPP_SDE, SamplerDPMPP_2S_Ancestral, SamplerDPMAdaptative, SamplerER_SDE, SamplerSASolver,
    KarrasScheduler, ExponentialScheduler, PolyexponentialScheduler, LaplaceScheduler, VPScheduler,
    BetaSamplingScheduler, SDTurboScheduler, AlignYourStepsScheduler,
    SplitSigmas, SplitSigmasDenoise, FlipSigmas, SetFirstSigma, ExtendIntermediateSigmas, ManualSigmas,
    SamplingPercentToSigma, SamplerCustomAdvanced, AddNoise, RescaleCFG, CFGZeroStar, CFGNorm, APG,
    PerturbedAttentionGuidance, SelfAttentionGuidance,
]
