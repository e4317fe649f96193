"""Model families as data: how to recognise each in a checkpoint, and the settings that come with it."""
from __future__ import annotations

import json
from importlib import resources
from typing import Any


def bundled_config(folder: str, component: str) -> dict[str, Any]:
    """The JSON config of one component ("unet", "vae", "scheduler", ...) of a bundled diffusers-format folder."""
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    text = resources.files(__package__).joinpath("configs", folder, component, name).read_text(encoding="utf-8")
    return json.loads(text)
