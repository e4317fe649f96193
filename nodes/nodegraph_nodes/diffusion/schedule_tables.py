"""Schedules read from published noise-level tables: GITS and OptimalSteps (ComfyUI's GITSScheduler and
OptimalStepsScheduler).

The numbers live in `data/schedule_tables.json`, with the papers they come from; this module only picks a row and,
for step counts the tables do not hold, resamples it log-linearly. Both follow ComfyUI's rules: `denoise` keeps the
last round(steps * denoise) steps (Python's round, halves to even), `denoise <= 0` gives an empty schedule, and the
final sigma is set to 0 (the tables end at the model's sigma_min).
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch

_TABLES = Path(__file__).with_name("data") / "schedule_tables.json"


@cache
def _tables() -> dict:
    return json.loads(_TABLES.read_text())


def gits_levels() -> dict[str, list[list[float]]]:
    """GITS schedules by coefficient ("0.80" ... "1.50"): row i holds the i + 2 step schedule (i + 3 sigmas)."""
    return _tables()["gits"]["levels"]


def optimal_steps_levels() -> dict[str, list[float]]:
    """OptimalSteps noise levels by model family (FLUX, Wan, Chroma)."""
    return _tables()["optimal_steps"]["levels"]


def loglinear_resample(levels, count: int) -> np.ndarray:
    """`count` values spread evenly over a descending table, interpolating linearly in log space.

    The table's points sit at evenly spaced positions on [0, 1]; the new points too, so the first and last values
    are kept. The interpolation runs over the reversed (ascending) table, as ComfyUI's does, so that the float64
    results agree with its to the last bit.
    """
    ascending_logs = np.log(np.asarray(levels, dtype=np.float64)[::-1])
    positions = np.linspace(0.0, 1.0, len(ascending_logs))
    resampled = np.interp(np.linspace(0.0, 1.0, count), positions, ascending_logs)
    return np.exp(resampled)[::-1].copy()


def _kept_steps(steps: int, denoise: float) -> int | None:
    """How many of the schedule's last steps a denoise keeps; None for an empty schedule."""
    if denoise >= 1.0:
        return steps
    if denoise <= 0.0:
        return None
    return round(steps * denoise)


def _finish(levels, kept: int) -> torch.Tensor:
    tail = np.array(levels[-(kept + 1):], dtype=np.float64)
    tail[-1] = 0.0
    return torch.tensor(tail, dtype=torch.float32)


def gits_coefficient_key(coeff: float) -> str:
    """The table key of a coefficient, which must be one of 0.80, 0.85, ... 1.50 (rounded to two decimals)."""
    key = f"{round(coeff, 2):.2f}"
    if key not in gits_levels():
        raise ValueError(f"GITSScheduler: coeff must be one of {', '.join(gits_levels())} (the coefficients the "
                         f"GITS schedules were searched for), got {coeff}")
    return key


def gits_sigmas(coeff: float, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """GITS's schedule for `steps` steps: the searched one for 2..20 steps, else the 20-step one resampled."""
    if steps < 2:
        raise ValueError(f"GITSScheduler: steps must be at least 2, got {steps}")
    rows = gits_levels()[gits_coefficient_key(coeff)]
    kept = _kept_steps(steps, denoise)
    if kept is None:
        return torch.zeros(0)
    levels = rows[steps - 2] if steps <= len(rows) + 1 else loglinear_resample(rows[-1], steps + 1)
    return _finish(levels, kept)


def optimal_steps_sigmas(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The OptimalSteps noise levels of a model family, resampled to steps + 1 values when the table has another
    length."""
    table = optimal_steps_levels()
    if model_type not in table:
        raise ValueError(f"OptimalStepsScheduler: model_type must be one of {', '.join(table)}, got {model_type!r}")
    kept = _kept_steps(steps, denoise)
    if kept is None:
        return torch.zeros(0)
    levels = table[model_type]
    if len(levels) != steps + 1:
        levels = loglinear_resample(levels, steps + 1)
    return _finish(levels, kept)
