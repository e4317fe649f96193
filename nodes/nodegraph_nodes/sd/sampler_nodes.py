"""Sampling nodes: KSampler, KSamplerAdvanced, NoiseSchedule (SIGMAS), KSamplerSelect and SamplerCustom.

Their inputs and meaning are ComfyUI's (docs/compat.md §5): the initial noise is drawn on the CPU from the seed,
so a seed gives the same image on any device; cfg = 1 skips the unconditional pass.
"""
from __future__ import annotations


from nodegraph.engine import MAX_SEED, Boolean, Combo, Float, Input, Int, Node, Output

from ..diffusion.names import SAMPLER_NAMES, SCHEDULER_NAMES

BETA_SCHEDULES = ["model", "linear", "scaled_linear", "cosine"]


# Inputs every sampler node shares. Each call makes a fresh Input: a declaration takes the attribute's name.
def steps_input() -> Int:
    return Int(20, min=1, max=10000, tooltip="The number of steps used in the denoising process.")


def cfg_input() -> Float:
    return Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                 tooltip="Classifier-free guidance scale: higher follows the prompt more closely; 1 disables it.")


def sampler_input() -> Combo:
    return Combo(SAMPLER_NAMES, tooltip="The algorithm used when sampling.")


def scheduler_input() -> Combo:
    return Combo(SCHEDULER_NAMES, default="normal", tooltip="How the noise levels are spaced.")


class KSampler(Node):
    """Denoise a latent with a model, positive and negative conditioning (classifier-free guidance)."""

    display_name = "KSampler"
    category = "sampling"
    model = Input("MODEL", tooltip="The model used for denoising the input latent.")
    seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True, tooltip="The random seed of the noise.")
    steps = steps_input()
    cfg = cfg_input()
    sampler_name = sampler_input()
    scheduler = scheduler_input()
    positive = Input("CONDITIONING", tooltip="What to include in the image.")
    negative = Input("CONDITIONING", tooltip="What to exclude from the image.")
    latent_image = Input("LATENT", tooltip="The latent image to denoise.")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="How much of the latent is replaced by noise: 1.0 for text-to-image, less for img2img.")
    outputs = (Output("LATENT", tooltip="The denoised latent."),)

    def execute(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise):
        from ..diffusion import ops

        samples = ops.run_ksampler(
            model, positive, negative, latent_image, self.context,
            seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
        )
        return ({**latent_image, "samples": samples},)


class KSamplerAdvanced(Node):
    """KSampler with control over noise and which steps run: for base + refiner splits and multi-pass sampling."""

    display_name = "KSampler (Advanced)"
    category = "sampling"
    model = Input("MODEL")
    add_noise = Combo(["enable", "disable"])
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    steps = steps_input()
    cfg = cfg_input()
    sampler_name = sampler_input()
    scheduler = scheduler_input()
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    latent_image = Input("LATENT")
    start_at_step = Int(0, min=0, max=10000)
    end_at_step = Int(10000, min=0, max=10000)
    return_with_leftover_noise = Combo(["disable", "enable"])
    outputs = (Output("LATENT"),)

    def execute(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, start_at_step, end_at_step, return_with_leftover_noise):
        from ..diffusion import ops

        samples = ops.run_ksampler(
            model, positive, negative, latent_image, self.context,
            seed=noise_seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, denoise=1.0,
            add_noise=add_noise == "enable", start_step=start_at_step, last_step=end_at_step,
            force_full_denoise=return_with_leftover_noise == "disable",
        )
        return ({**latent_image, "samples": samples},)


class NoiseSchedule(Node):
    """The noise levels (sigmas) of a sampling run: the model's training schedule (or linear / scaled_linear /
    cosine betas) spaced by a scheduler, for `steps` steps; denoise < 1 keeps the tail of a longer schedule."""

    display_name = "Noise Schedule"
    category = "sampling/custom_sampling/schedulers"
    aliases = ("BasicScheduler",)
    model = Input("MODEL")
    scheduler = Combo(SCHEDULER_NAMES, default="normal")
    steps = Int(20, min=1, max=10000)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    beta_schedule = Combo(BETA_SCHEDULES, optional=True,
                          tooltip="The training beta schedule: the model's own, or linear / scaled_linear / cosine.")
    outputs = (Output("SIGMAS"),)

    def execute(self, model, scheduler, steps, denoise, beta_schedule="model"):
        from ..diffusion import ops

        return (ops.noise_schedule(model, scheduler, steps, denoise, beta_schedule),)


class KSamplerSelect(Node):
    """Choose a sampling algorithm for SamplerCustom."""

    display_name = "KSampler Select"
    category = "sampling/custom_sampling/samplers"
    sampler_name = Combo(SAMPLER_NAMES)
    outputs = (Output("SAMPLER"),)

    def execute(self, sampler_name: str):
        from ..diffusion.guidance import SamplerSpec

        return (SamplerSpec(sampler_name),)


class SamplerCustom(Node):
    """Sample with a sampler and sigmas chosen by other nodes (NoiseSchedule, KSamplerSelect)."""

    display_name = "SamplerCustom"
    category = "sampling/custom_sampling"
    model = Input("MODEL")
    add_noise = Boolean(True)
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    cfg = cfg_input()
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    sampler = Input("SAMPLER")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    outputs = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    def execute(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        from ..diffusion import ops

        from ..diffusion.guidance import SamplerSpec

        spec = sampler if isinstance(sampler, SamplerSpec) else SamplerSpec(str(sampler))
        samples, denoised = ops.sample_custom(
            model, positive, negative, latent_image, self.context,
            seed=noise_seed, cfg=cfg, sampler_name=spec.name, sampler_options=spec.options, sigmas=sigmas,
            add_noise=add_noise,
        )
        return ({**latent_image, "samples": samples}, {**latent_image, "samples": denoised})


NODES = [KSampler, KSamplerAdvanced, NoiseSchedule, KSamplerSelect, SamplerCustom]
