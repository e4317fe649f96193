"""Which worker runs a prompt: model affinity first, then the least-loaded worker (fewest prompts running, then
fewest bytes of models held, then fewest prompts run). A worker with `--concurrency N` stays a candidate while it has a
free slot.

A prompt's models are read from its loader nodes' constants (`ckpt_name`, `vae_name`, ...), by file name, so they
compare with what a worker's model cache reports as loaded even when workers see the models under other roots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterable

# Loader inputs that name a model file (ComfyUI's names, which nodegraph's loaders keep).
MODEL_INPUTS = ("ckpt_name", "vae_name", "control_net_name", "lora_name", "unet_name", "clip_name")


def prompt_models(prompt: dict[str, Any]) -> frozenset[str]:
    """File names of the models a prompt (API format) reads: string constants of its loader inputs."""
    names = set()
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for name in MODEL_INPUTS:
            value = inputs.get(name)
            if isinstance(value, str) and value:
                names.add(PurePosixPath(value.replace("\\", "/")).name)
    return frozenset(names)


@dataclass
class WorkerLoad:
    """What the scheduler knows of a worker with a free slot."""

    id: str
    models: frozenset[str] = field(default_factory=frozenset)  # file names its model cache holds
    loaded_bytes: int = 0
    prompts_run: int = 0
    running: int = 0  # its slots taken now (0 for an idle worker)


def choose_worker(models: frozenset[str], available: Iterable[WorkerLoad]) -> WorkerLoad | None:
    """The available worker (one with a free slot) holding most of `models`; among equals the least loaded (fewest
    prompts running, then fewest bytes of models held, then fewest prompts run), so prompts spread over the pool's
    devices and prompts for new models go where they evict no warm ones. Affinity comes first even over a busier
    worker: loading a model costs more than sharing a device, and prompts on one model batch their UNet calls."""
    best: WorkerLoad | None = None
    best_key: tuple[int, int, int, int] | None = None
    for worker in available:
        key = (-len(models & worker.models), worker.running, worker.loaded_bytes, worker.prompts_run)
        if best_key is None or key < best_key:
            best, best_key = worker, key
    return best
