"""Shared set-up for SD node tests: tiny models on disk, a registry with the SD pack, a runner."""
from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from nodegraph.engine import Executor, Folders, Runtime, default_registry, validate_prompt

TXT2IMG = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42, "steps": 4, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "test", "images": ["8", 0]}},
}


def txt2img(**changes: Any) -> dict[str, Any]:
    """The txt2img workflow with `node_input=value` changes, e.g. txt2img(**{"3.seed": 1})."""
    prompt = copy.deepcopy(TXT2IMG)
    for key, value in changes.items():
        nid, name = key.split(".")
        prompt[nid]["inputs"][name] = value
    return prompt


def make_folders(root: Path, models_root: Path) -> Folders:
    return Folders(
        models_dirs=[models_root],
        input_dir=root / "input",
        output_dir=root / "output",
        temp_dir=root / "temp",
        settings={"device": "cpu"},
    )


class Runner:
    """Validate and run workflows on one executor (so the output cache persists between runs)."""

    def __init__(self, folders: Folders):
        self.folders = folders
        self.registry = default_registry()
        self.executor = Executor(Runtime(folders))  # its own runtime: a model cache of its own

    def validate(self, prompt: dict[str, Any]):
        return validate_prompt(prompt, self.registry, self.folders)

    def run(self, prompt: dict[str, Any], events: list | None = None, extra_data: dict | None = None):
        result = self.validate(prompt)
        assert result.ok, result.node_errors or result.error
        on_event = (lambda e, d: events.append((e, d))) if events is not None else None
        return asyncio.run(self.executor.run(result.workflow, "test", extra_data=extra_data, on_event=on_event))


def diffusers_pipeline(cls, models_root: Path, checkpoint: str, **kwargs: Any):
    """A diffusers pipeline read by diffusers' own loader from one of make_tiny_models' single files, with the
    diffusers folder of the same name (written from the in-memory models, not by nodegraph's loader) as its config:
    a parity reference that a nodegraph loader bug cannot leak into."""
    checkpoints = Path(models_root) / "checkpoints"
    name = checkpoint.removesuffix(".safetensors")
    pipe = cls.from_single_file(str(checkpoints / f"{name}.safetensors"), config=str(checkpoints / name),
                                local_files_only=True, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe
