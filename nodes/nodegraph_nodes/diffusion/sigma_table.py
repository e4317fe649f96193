"""How a discrete-time diffusion model sees noise: its sigma table and the maps around it.

Samplers work in k-diffusion's variance-exploding form: x = x0 + sigma * eps, with sigma falling to 0. A discrete
DDPM-style model (SD1, SD2, SDXL) was trained on x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * eps instead, which is the
same point scaled by sqrt(a_t), with sigma_t = sqrt((1 - a_t) / a_t). `DiscreteModelSampling` holds that table and
converts between the two views: the UNet input scaling, the timestep for a sigma, and x0 from the UNet output.

Timesteps follow ComfyUI: `timestep(sigma)` is the index of the nearest table entry in log-sigma (quantized), and
`sigma(t)` interpolates log-sigma linearly between entries. diffusers' pipelines choose their own timesteps (float
ones for Euler's "linspace" spacing, interpolating sigma linearly); the two agree whenever the sampled timesteps
are integers, which is what the parity tests use (see tests/test_ksampler_parity.py).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch



def _denoised_from_epsilon(sigma: torch.Tensor, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The model predicted the noise: x0 = x - sigma * eps."""
    return x - output * sigma


def _denoised_from_v(sigma: torch.Tensor, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The model predicted v = sqrt(a) * eps - sqrt(1 - a) * x0 (Salimans & Ho 2022), written in sigma terms."""
    return x / (sigma**2 + 1) - output * sigma / (sigma**2 + 1) ** 0.5


# prediction_type (diffusers' config name) -> x0 from (sigma, model output, x in VE form)
PREDICTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "epsilon": _denoised_from_epsilon,
    "v_prediction": _denoised_from_v,
}


# Our names for the training schedules (NoiseSchedule's beta_schedule input) -> diffusers' names.
DIFFUSERS_BETA_NAMES = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "cosine": "squaredcos_cap_v2",
    "squaredcos_cap_v2": "squaredcos_cap_v2",
}


class DiscreteModelSampling:
    """The sigma table of a discrete-time model and the conversions samplers need.

    `sigmas` is ascending (index = training timestep), float32, on `device`.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon") -> None:
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}; known: {sorted(PREDICTIONS)}")
        self.prediction_type = prediction_type
        self._denoised = PREDICTIONS[prediction_type]
        ac = alphas_cumprod.double()  # float64 then rounded once: the table is as exact as float32 allows
        self.sigmas = (((1 - ac) / ac) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DiscreteModelSampling":
        """Build from a diffusers scheduler config (num_train_timesteps, beta_start, beta_end, beta_schedule,
        prediction_type; diffusers' defaults where a key is missing).

        The table is the one diffusers' schedulers compute for that config (float32 betas), taken from diffusers
        itself, so that our samplers and diffusers' pipelines walk the same sigmas; ComfyUI computes the betas in
        float64, which moves sigmas by ~1e-5 relative: invisible in images, but enough to break 1e-4 parity.
        """
        from diffusers import DDPMScheduler

        schedule = config.get("beta_schedule", "linear")
        settings = {
            "num_train_timesteps": int(config.get("num_train_timesteps", 1000)),
            "beta_start": float(config.get("beta_start", 0.0001)),
            "beta_end": float(config.get("beta_end", 0.02)),
            "beta_schedule": DIFFUSERS_BETA_NAMES.get(schedule, schedule),
        }
        if config.get("trained_betas") is not None:
            settings["trained_betas"] = config["trained_betas"]
        try:
            scheduler = DDPMScheduler(**settings)
        except NotImplementedError:
            raise ValueError(f"unknown beta schedule {schedule!r}; known: {sorted(DIFFUSERS_BETA_NAMES)}") from None
        return cls(scheduler.alphas_cumprod, config.get("prediction_type", "epsilon"))

    def to(self, device: torch.device | str) -> "DiscreteModelSampling":
        """A copy whose tables live on `device` (the sampler keeps one beside the UNet to avoid transfers)."""
        moved = object.__new__(DiscreteModelSampling)
        moved.__dict__.update(self.__dict__)
        moved.sigmas = self.sigmas.to(device)
        moved.log_sigmas = self.log_sigmas.to(device)
        return moved

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The training timestep whose sigma is nearest in log space (float tensor, same shape as `sigma`)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigmas = self.log_sigmas.to(sigma.device)
        distance = (sigma.log().reshape(1, -1) - log_sigmas[:, None]).abs()
        return distance.argmin(dim=0).reshape(sigma.shape).float()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """The sigma of a (possibly fractional) timestep, interpolating log-sigma between table entries."""
        t = torch.as_tensor(timestep, dtype=torch.float32)
        log_sigmas = self.log_sigmas.to(t.device)
        t = t.clamp(0, len(log_sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """The sigma at a fraction of the schedule (0 = start, pure noise; 1 = end), for start/end_percent gating."""
        if percent <= 0.0:
            return float("inf")
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * (len(self.sigmas) - 1))))

    def is_max_denoise(self, sigma0: float) -> bool:
        """True when sampling starts from the top of the schedule (pure txt2img)."""
        return sigma0 >= self.sigma_max or abs(sigma0 - self.sigma_max) <= 1e-5 * self.sigma_max

    def noise_scaling(self, sigma0: float, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The sampler's starting point: latent + noise * sigma0.

        At the top of the schedule the noise is scaled by sqrt(1 + sigma0^2) instead: that is the VE form of a pure
        DDPM sample x_T = eps (what diffusers' pipelines start from), and matches ComfyUI.
        """
        scale = (1.0 + sigma0**2) ** 0.5 if self.is_max_denoise(sigma0) else sigma0
        return latent + noise * scale

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The UNet input for x at `sigma` ([B] tensor): x / sqrt(sigma^2 + 1), i.e. back to the DDPM scale."""
        return x / (_per_sample(sigma, x) ** 2 + 1) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x0 from the UNet output (eps or v, by prediction_type)."""
        return self._denoised(_per_sample(sigma, x), output, x)


def _per_sample(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a [B] sigma to broadcast over x's [B, C, H, W]."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
