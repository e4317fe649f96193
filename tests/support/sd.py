"""Shared set-up for SD node tests: tiny models on disk (the `models_root` fixture), folders, a runner (`runner`).

A plugin: torch and the model code are imported inside the fixtures, so loading it costs nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodegraph.engine import Executor, Folders, Runtime
from nodegraph.run_once import PromptRunner


def make_folders(root: Path, models_root: Path) -> Folders:
    """input/output/temp under `root`, models from `models_root`, on the CPU."""
    return Folders(
        models_dirs=[models_root],
        input_dir=root / "input",
        output_dir=root / "output",
        temp_dir=root / "temp",
        settings={"device": "cpu"},
    )


class Runner(PromptRunner):
    """Validate and run workflows on one executor (so the output cache persists between runs), with the default
    registry; a prompt that does not validate fails the test with its errors."""

    def __init__(self, folders: Folders):
        super().__init__(folders, executor=Executor(Runtime(folders)))  # its own runtime: a model cache of its own

    def run(self, prompt: dict[str, Any], events: list | None = None,  # type: ignore[override]
            extra_data: dict | None = None):
        result = self.validate(prompt)
        assert result.ok, result.node_errors or result.error
        on_event = (lambda e, d: events.append((e, d))) if events is not None else None
        return super().run(result, "test", extra_data=extra_data, on_event=on_event)


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


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make_tiny_models written once per test module."""
    from nodegraph_testmodels.files import make_tiny_models

    root = tmp_path_factory.mktemp("models")
    make_tiny_models(root)
    return root


@pytest.fixture
def runner(tmp_path: Path, models_root: Path) -> Runner:
    """A Runner on fresh folders and the tiny models (its executor has a runtime, so a model cache, of its own)."""
    return Runner(make_folders(tmp_path, models_root))
