"""Output files of workers that do not share the server's disk: read on the worker, sent as bytes, written by the
server into its own output (or temp) folder.

A node's UI output lists its files as ComfyUI does: `{"images": [{"filename", "subfolder", "type"}]}` (any list of
such entries counts). The server keeps the worker's name unless a file of that name exists already (another worker,
or an earlier run, wrote it); then it picks a free name and rewrites the entry, so no output is overwritten.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from ..engine import Folders, resolve_inside

FILE_TYPES = ("output", "temp")
FileKey = tuple[str, str, str]  # (type, subfolder, filename)


def file_entries(ui: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The entries of a UI output that name a file in the output or temp folder."""
    for values in ui.values():
        if not isinstance(values, list):
            continue
        for entry in values:
            if isinstance(entry, dict) and isinstance(entry.get("filename"), str) and entry.get("type") in FILE_TYPES:
                yield entry


def _key(entry: dict[str, Any]) -> FileKey:
    return (entry["type"], entry.get("subfolder") or "", entry["filename"])


def _path(folders: Folders, key: FileKey) -> Path:
    kind, subfolder, filename = key
    return resolve_inside(folders.root_for(kind), f"{subfolder}/{filename}" if subfolder else filename)


def collect_files(ui: dict[str, Any], folders: Folders, remove: bool = True) -> list[dict[str, Any]]:
    """Read the files a UI output names (on the worker); `remove` deletes them once read, since the server keeps
    the copy that counts."""
    files = []
    for entry in file_entries(ui):
        kind, subfolder, filename = _key(entry)
        path = _path(folders, (kind, subfolder, filename))
        if not path.is_file():
            continue
        files.append({"type": kind, "subfolder": subfolder, "filename": filename, "data": path.read_bytes()})
        if remove:
            path.unlink()
    return files


def _free_name(path: Path) -> Path:
    for number in range(1, 100000):
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name next to {path}")


def store_files(files: list[dict[str, Any]], folders: Folders) -> dict[FileKey, str]:
    """Write received files into the server's folders; returns the renames {(type, subfolder, old name): new name}
    for files whose name was taken."""
    renames: dict[FileKey, str] = {}
    for item in files:
        key = (item["type"], item["subfolder"], item["filename"])
        path = _path(folders, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        target = path
        while True:
            try:
                with open(target, "xb") as handle:  # never overwrite another prompt's file
                    handle.write(item["data"])
                break
            except FileExistsError:
                target = _free_name(path)
        if target != path:
            renames[key] = target.name
    return renames


def rename_entries(ui: dict[str, Any], renames: dict[FileKey, str]) -> None:
    """Point a UI output's entries at the names the server gave the files."""
    for entry in file_entries(ui):
        new = renames.get(_key(entry))
        if new is not None:
            entry["filename"] = new
