"""SDXL nodes: the size- and aesthetic-conditioned text encoders, and the refiner stage.

SDXL's UNets take "time ids" besides the text: the base model the original size, the crop's top-left corner and
the target size; the refiner the original size, the crop and an aesthetic score. CLIPTextEncodeSDXL and
CLIPTextEncodeSDXLRefiner (ComfyUI's names, inputs and ranges) put them on the conditioning; plain CLIPTextEncode
leaves them out and the sampler fills in the family's defaults at the latent's size (ComfyUI does the same).

SDXLRefiner is the second half of the base + refiner recipe (docs/compat.md §5) in one node: it continues the base
sampler's leftover noise with the refiner model on the SAME sigma schedule, exactly as a KSamplerAdvanced with
add_noise disabled, start_at_step at the switch and return_with_leftover_noise disabled would.
"""
from __future__ import annotations

from typing import Any

from nodegraph.engine import MAX_RESOLUTION, MAX_SEED, Combo, Float, Folders, Input, Int, Node, Output, String

from .sampler_nodes import cfg_input, sampler_input, scheduler_input, steps_input

SWITCH_UNITS = ["step", "fraction"]


class CLIPTextEncodeSDXL(Node):
    """Encode a prompt for an SDXL base model with its size conditioning: text_g goes to the OpenCLIP bigG
    encoder, text_l to CLIP-L (usually the same prompt). width/height are the original image size the model should
    imitate, crop_w/crop_h the top-left corner of a crop of it, target_width/target_height the output size; the
    defaults (1024, no crop) are what SDXL was trained to produce."""

    display_name = "CLIP Text Encode (SDXL)"
    category = "advanced/conditioning"
    clip = Input("CLIP")
    width = Int(1024, min=0, max=MAX_RESOLUTION)
    height = Int(1024, min=0, max=MAX_RESOLUTION)
    crop_w = Int(0, min=0, max=MAX_RESOLUTION)
    crop_h = Int(0, min=0, max=MAX_RESOLUTION)
    target_width = Int(1024, min=0, max=MAX_RESOLUTION)
    target_height = Int(1024, min=0, max=MAX_RESOLUTION)
    text_g = String("", multiline=True, dynamic_prompts=True, tooltip="The prompt for the OpenCLIP bigG encoder.")
    text_l = String("", multiline=True, dynamic_prompts=True, tooltip="The prompt for the CLIP-L encoder.")
    outputs = (Output("CONDITIONING"),)

    def execute(self, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        from ..diffusion import ops
        from ..diffusion.text_encoding import sdxl_time_ids

        time_ids = sdxl_time_ids(
            height=height, width=width, crop_h=crop_h, crop_w=crop_w,
            target_height=target_height, target_width=target_width,
        )
        return (ops.encode_text(self.context.runtime, clip, {"g": text_g, "l": text_l}, time_ids=time_ids),)


class CLIPTextEncodeSDXLRefiner(Node):
    """Encode a prompt for the SDXL refiner with its aesthetic score (about 6 for the positive prompt, 2.5 for the
    negative: what the refiner learned as good and bad images) and the original image size."""

    display_name = "CLIP Text Encode (SDXL Refiner)"
    category = "advanced/conditioning"
    ascore = Float(6.0, min=0.0, max=1000.0, step=0.01, tooltip="The aesthetic score to condition on.")
    width = Int(1024, min=0, max=MAX_RESOLUTION)
    height = Int(1024, min=0, max=MAX_RESOLUTION)
    text = String("", multiline=True, dynamic_prompts=True)
    clip = Input("CLIP")
    outputs = (Output("CONDITIONING"),)

    def execute(self, ascore, width, height, text, clip):
        from ..diffusion import ops
        from ..diffusion.text_encoding import refiner_time_ids

        time_ids = refiner_time_ids(height=height, width=width, aesthetic_score=ascore)
        return (ops.encode_text(self.context.runtime, clip, text, time_ids=time_ids),)


def _switch_problem(switch_at: float, switch_unit: str) -> str | None:
    if switch_unit == "step" and switch_at != int(switch_at):
        return f"switch_at is a step number when switch_unit is 'step', got {switch_at}"
    if switch_unit == "fraction" and not 0.0 <= switch_at <= 1.0:
        return f"switch_at is a fraction of the schedule (0 to 1) when switch_unit is 'fraction', got {switch_at}"
    return None


class SDXLRefiner(Node):
    """Finish an SDXL image with the refiner: continue the base sampler's output (a KSamplerAdvanced with
    return_with_leftover_noise enabled and end_at_step at the switch) on the same noise schedule. Use the base
    sampler's steps, sampler and scheduler. The switch is a step number (the base's end_at_step, e.g. 20 of 25) or
    a fraction of the noise schedule, counted as diffusers' denoising_end / denoising_start (0.8: the base did the
    noisiest 80% of the schedule)."""

    display_name = "SDXL Refiner"
    category = "sampling"
    model = Input("MODEL", tooltip="The refiner model.")
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True,
                     tooltip="Seeds the noise of ancestral and SDE samplers (no noise is added to the latent).")
    steps = steps_input()
    cfg = cfg_input()
    sampler_name = sampler_input()
    scheduler = scheduler_input()
    positive = Input("CONDITIONING", tooltip="The refiner's positive conditioning.")
    negative = Input("CONDITIONING", tooltip="The refiner's negative conditioning.")
    latent_image = Input("LATENT", tooltip="The base sampler's output, still noisy.")
    switch_at = Float(20.0, min=0.0, max=10000.0, step=0.01,
                      tooltip="Where the refiner takes over: a step number, or a fraction of the schedule.")
    switch_unit = Combo(SWITCH_UNITS, tooltip="Whether switch_at counts steps or a fraction of the schedule.")
    outputs = (Output("LATENT", tooltip="The refined latent, fully denoised."),)

    @classmethod
    def check_inputs(cls, env: Folders | None, switch_at: float | None = None, switch_unit: str | None = None, **_: Any):
        if switch_at is None or switch_unit is None:  # a linked value is checked when the node runs
            return None
        problem = _switch_problem(switch_at, switch_unit)
        return {"switch_at": problem} if problem else None

    def execute(self, model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                switch_at, switch_unit):
        from ..diffusion import ops

        problem = _switch_problem(switch_at, switch_unit)
        if problem:
            raise ValueError(problem)
        start = int(switch_at) if switch_unit == "step" else ops.switch_step(
            model, sampler_name, scheduler, steps, switch_at
        )
        samples = ops.run_ksampler(
            model, positive, negative, latent_image, self.context,
            seed=noise_seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, denoise=1.0,
            add_noise=False, start_step=start, last_step=10000, force_full_denoise=True,
        )
        return ({**latent_image, "samples": samples},)


NODES = [CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner, SDXLRefiner]
