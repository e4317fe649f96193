"""Which editor `nodegraph serve` serves at `/`: ours (the project's `web/`) or, on request, the official ComfyUI
frontend from the `comfyui-frontend-package` wheel when the user has installed it. nodegraph never vendors or
installs that package (it is GPL-3.0 and large); it only finds it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

FRONTENDS = ("nodegraph", "comfyui")
COMFYUI_PACKAGE = "comfyui_frontend_package"
COMFYUI_INSTALL = "pip install comfyui-frontend-package"


class FrontendMissing(LookupError):
    """The requested editor is not installed; the message says how to install it."""


def comfyui_frontend_root() -> Path:
    """The `static/` folder of the installed `comfyui-frontend-package`, or FrontendMissing."""
    spec = importlib.util.find_spec(COMFYUI_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        static = Path(location) / "static"
        if (static / "index.html").is_file():
            return static
    raise FrontendMissing(
        "the official ComfyUI frontend is not installed. Install it into this Python environment with "
        f"`{COMFYUI_INSTALL}` (GPL-3.0, not part of nodegraph), or point --web-root at its static folder"
    )


def frontend_root(name: str) -> Path | None:
    """The web root for `--frontend name`: None means the project's own editor."""
    if name == "nodegraph":
        return None
    if name == "comfyui":
        return comfyui_frontend_root()
    raise ValueError(f"unknown frontend {name!r}; expected one of {', '.join(FRONTENDS)}")
