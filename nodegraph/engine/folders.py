"""Where models, inputs and outputs live, and the one place that turns user-given names into safe paths.

Models follow ComfyUI's layout: a models root holds `checkpoints/`, `controlnet/`, `vae/`, `loras/`, `embeddings/`,
`upscale_models/`, `clip_vision/`, `style_models/`, `vae_approx/`, `diffusion_models/` (also read from `unet/`),
`text_encoders/` (also read from `clip/`), `configs/` and `gligen/`.
Several roots may be given; the first is where new files go. Every path built from a name that came from a user
(a workflow, an upload, a URL) goes through `resolve_inside`, which resolves symlinks before checking containment.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# vae_approx: TAESD decoders for live previews (taesd_decoder.*, taesdxl_decoder.*), as in ComfyUI.
MODEL_KINDS = (
    "checkpoints", "controlnet", "vae", "loras", "embeddings", "vae_approx", "upscale_models", "clip_vision",
    "style_models", "diffusion_models", "text_encoders", "configs", "gligen",
)
# Kinds read from more than one folder of a root, as ComfyUI does (its older folder names come second).
KIND_FOLDERS = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip")}
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
CONFIG_EXTENSIONS = (".yaml", ".yml")  # the configs/ folder: original inference configs
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


class UnsafePath(ValueError):
    """A user-given name that would leave its folder (`..`, absolute paths, symlinks pointing out)."""


class InvalidName(UnsafePath):
    """A user-given name no file system takes (control characters, a component over 255 bytes): a 400, not a 403."""


MAX_NAME_BYTES = 255  # one path component, as Linux, macOS and Windows file systems allow


def name_problem(relative: str) -> str | None:
    """Why a user-given relative path cannot name a file on any common file system, else None: control characters
    (a name with a newline is written, then cannot be served) or a component over 255 bytes (ENAMETOOLONG)."""
    bad = next((c for c in relative if ord(c) < 32 or 127 <= ord(c) < 160), None)
    if bad is not None:
        return f"control character {bad!r} in the name {relative[:80]!r}"
    for part in relative.replace("\\", "/").split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            return f"a name of {len(part.encode('utf-8', 'surrogatepass'))} bytes; the limit is {MAX_NAME_BYTES} bytes"
    return None


def resolve_inside(root: Path, relative: str) -> Path:
    """`root / relative`, with symlinks resolved, guaranteed to stay inside `root`, else UnsafePath (also for names
    no file system takes: control characters, components over 255 bytes)."""
    if not isinstance(relative, str) or relative == "" or "\x00" in relative:
        raise UnsafePath(f"invalid file name {relative!r}")
    problem = name_problem(relative)
    if problem is not None:
        raise InvalidName(f"invalid file name: {problem}")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")):
        raise UnsafePath(f"absolute paths are not allowed: {relative!r}")
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root_real / relative))
    if target != root_real and root_real not in target.parents:
        raise UnsafePath(f"{relative!r} points outside {root}")
    return target


@dataclass
class Folders:
    """The folders one server or CLI run works with."""

    models_dirs: list[Path] = field(default_factory=lambda: [Path("models")])
    input_dir: Path = Path("input")
    output_dir: Path = Path("output")
    temp_dir: Path = Path("temp")
    # Options for node packs that are not folders (e.g. the model cache's device, precision and budgets).
    settings: dict[str, Any] = field(default_factory=dict)
    # Read-only folders searched after `input_dir` (the example workflows' input images), never written to.
    extra_input_dirs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.models_dirs = [Path(p) for p in self.models_dirs]
        self.input_dir = Path(self.input_dir)
        self.output_dir = Path(self.output_dir)
        self.temp_dir = Path(self.temp_dir)
        self.extra_input_dirs = [Path(p) for p in self.extra_input_dirs]

    # --- models --------------------------------------------------------------------------------------------------

    def model_roots(self, kind: str) -> list[Path]:
        if kind not in MODEL_KINDS:
            raise KeyError(f"unknown model folder {kind!r}; known: {', '.join(MODEL_KINDS)}")
        return [root / folder for root in self.models_dirs for folder in KIND_FOLDERS.get(kind, (kind,))]

    def list_models(self, kind: str) -> list[str]:
        """Model names of one kind: files with a model extension, and diffusers folders (with model_index.json or
        config.json), as paths relative to their root with '/' separators, sorted, first root winning."""
        names: dict[str, None] = {}
        extensions = CONFIG_EXTENSIONS if kind == "configs" else MODEL_EXTENSIONS
        for root in self.model_roots(kind):
            if not root.is_dir():
                continue
            real_root = Path(os.path.realpath(root))
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                here = Path(dirpath)
                if here != root and ((here / "model_index.json").exists() or (here / "config.json").exists()):
                    if _really_inside(real_root, here):
                        names.setdefault(here.relative_to(root).as_posix(), None)
                    dirnames.clear()  # a diffusers folder is one model, not a tree to list
                    continue
                dirnames.sort()
                for filename in sorted(filenames):
                    if filename.lower().endswith(extensions) and _really_inside(real_root, here / filename):
                        names.setdefault((here / filename).relative_to(root).as_posix(), None)
        return sorted(names)

    def model_path(self, kind: str, name: str) -> Path:
        """The file or folder for a model name, searching the roots in order."""
        for root in self.model_roots(kind):
            path = resolve_inside(root, name)
            if path.exists():
                return path
        roots = ", ".join(str(r) for r in self.model_roots(kind))
        raise FileNotFoundError(f"model {name!r} not found in {roots}")

    # --- inputs and outputs --------------------------------------------------------------------------------------

    def root_for(self, kind: str) -> Path:
        roots = {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}
        if kind not in roots:
            raise UnsafePath(f"unknown folder type {kind!r}; expected input, output or temp")
        return roots[kind]

    def annotated_path(self, name: str, default: str = "input") -> Path:
        """Resolve ComfyUI's annotated names: `x.png [output]` picks the output folder, plain names `default`."""
        kind = default
        for candidate in ("input", "output", "temp"):
            suffix = f" [{candidate}]"
            if name.endswith(suffix):
                name, kind = name[: -len(suffix)], candidate
                break
        path = resolve_inside(self.root_for(kind), name)
        if kind == "input" and not path.exists():
            for extra in self.extra_input_dirs:
                candidate = resolve_inside(extra, name)
                if candidate.exists():
                    return candidate
        return path

    def list_inputs(self, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
        found: set[str] = set()
        for root in (self.input_dir, *self.extra_input_dirs):
            if not root.is_dir():
                continue
            real_root = Path(os.path.realpath(root))
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for filename in filenames:
                    path = Path(dirpath) / filename
                    if filename.lower().endswith(extensions) and _really_inside(real_root, path):
                        found.add(path.relative_to(root).as_posix())
        return sorted(found)


def _really_inside(real_root: Path, path: Path) -> bool:
    """Whether `path`, symlinks resolved, lies inside `real_root` (what `resolve_inside` will accept): only names
    that can be used are listed. A root that is itself a link is fine; a link inside it pointing elsewhere is not
    (give its target as a root of its own)."""
    target = Path(os.path.realpath(path))
    return target == real_root or real_root in target.parents
