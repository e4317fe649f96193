"""Where the project's own files are: the editor (`web/`), example workflows, bundled demo models.

In a source checkout they sit at the repository root; in an installed wheel they are packaged inside `nodegraph/`
(see `[tool.setuptools]` in pyproject.toml). Both layouts are looked up here so nothing else needs to care.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def project_dir(name: str) -> Path | None:
    """The `web`, `workflows` or `demo_models` folder, installed or in a checkout; None if absent."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    return None


def default_models_dirs() -> list[Path]:
    """Models roots searched after the user's own: the bundled demo models, when they are installed."""
    demo = project_dir("demo_models")
    return [demo] if demo is not None else []


def example_input_dirs() -> list[Path]:
    """The example workflows' input images, searched after the user's input folder (read-only)."""
    workflows = project_dir("workflows")
    inputs = workflows / "inputs" if workflows is not None else None
    return [inputs] if inputs is not None and inputs.is_dir() else []
