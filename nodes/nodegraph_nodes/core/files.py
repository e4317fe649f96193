"""The checks that the load and save nodes share: an input file's name and fingerprint, an output prefix.

Names come from the workflow, so each one is resolved inside its folder (`env.annotated_path`, `resolve_inside`)
before anything is read or written. No torch here: validation runs these before any node executes.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from nodegraph.engine import Folders, UnsafePath
from nodegraph.engine.folders import resolve_inside


def input_file(env: Folders | None, input_name: str, name: str, kind: str,
               show_folder: bool = True) -> tuple[Path | None, dict[str, str] | None]:
    """(the file, None) for `name` in the input folder, or (None, {input_name: why}) when the name leaves the
    folder or names no file there. `kind` ("image", "latent") and `show_folder` shape the message."""
    try:
        path = env.annotated_path(name)
    except UnsafePath as exc:
        return None, {input_name: str(exc)}
    if not path.is_file():
        where = f" {env.input_dir}" if show_folder else ""
        return None, {input_name: f"Invalid {kind} file: {name!r} is not in the input folder{where}"}
    return path, None


def input_fingerprint(env: Folders | None, name: str) -> str | None:
    """The SHA-256 of an input file's bytes (a changed file runs its node again), None when it cannot be read."""
    try:
        return hashlib.sha256(env.annotated_path(name).read_bytes()).hexdigest()
    except (OSError, UnsafePath):
        return None


def output_prefix_problem(env: Folders | None, filename_prefix: str) -> dict[str, str] | None:
    """{"filename_prefix": why} when the prefix's subfolders would leave the output folder, else None."""
    subfolder = filename_prefix.replace("\\", "/").rpartition("/")[0]
    if subfolder:
        try:
            resolve_inside(env.output_dir, subfolder)
        except UnsafePath as exc:
            return {"filename_prefix": f"must stay inside the output folder: {exc}"}
    return None


def prefix_folder(folder: Path, prefix: str) -> tuple[Path, str, str]:
    """(the folder to write in, created; the prefix's subfolder; its file name part) for a filename_prefix that may
    hold subfolders, which must stay inside `folder`."""
    subfolder, _, name = prefix.replace("\\", "/").rpartition("/")
    target = resolve_inside(folder, subfolder) if subfolder else Path(folder).resolve()
    if not name:
        raise ValueError(f"filename_prefix {prefix!r} has no file name part")
    target.mkdir(parents=True, exist_ok=True)
    return target, subfolder, name
