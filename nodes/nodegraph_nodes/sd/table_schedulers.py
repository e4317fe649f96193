"""Scheduler nodes whose sigmas come from published tables (ComfyUI's comfy_extras/nodes_gits.py and
nodes_optimalsteps.py): GITSScheduler and OptimalStepsScheduler. The tables and the row selection live in
`diffusion/schedule_tables.py`."""
from __future__ import annotations

from nodegraph.engine import Combo, Float, Int, Node, Output


class GITSScheduler(Node):
    """GITS (Chen et al., ICML 2024) time schedules searched for Stable Diffusion 1.5: the searched schedule for 2 to
    20 steps, the 20-step one resampled log-linearly beyond; `coeff` picks how much the search favoured few steps."""

    category = "sampling/custom_sampling/schedulers"
    coeff = Float(1.20, min=0.80, max=1.50, step=0.05)
    steps = Int(10, min=2, max=1000)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, coeff, steps, denoise):
        from ..diffusion.schedule_tables import gits_sigmas

        return (gits_sigmas(coeff, steps, denoise),)


class OptimalStepsScheduler(Node):
    """Optimal Stepsize (Pei et al. 2025) noise levels for the FLUX, Wan and Chroma flow-matching families,
    resampled log-linearly to `steps`. They are sigmas in [0, 1]: meant for those families' samplers (which
    nodegraph does not run yet); on an SD model they cover only its last, low-noise part."""

    category = "sampling/custom_sampling/schedulers"
    model_type = Combo(["FLUX", "Wan", "Chroma"])
    steps = Int(20, min=3, max=1000)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    def execute(self, model_type, steps, denoise):
        from ..diffusion.schedule_tables import optimal_steps_sigmas

        return (optimal_steps_sigmas(model_type, steps, denoise),)


NODES = [GITSScheduler, OptimalStepsScheduler]
