"""The example workflows shipped with nodegraph, by name: `nodegraph run txt2img` works from any directory.

They live in `workflows/` (packaged inside the wheel, see nodegraph/paths.py) as `NAME.json` (API format) and
`NAME.ui.json` (the editor's format), with a one-line description of each in `workflows/examples.txt`; all three
are written by scripts/make_example_workflows.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .paths import project_dir

INDEX = "examples.txt"  # NAME<tab>description, one a line


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    api: Path  # NAME.json
    ui: Path | None  # NAME.ui.json, when present


def examples() -> list[Example]:
    """Every example workflow, in the order of the index (then any file the index does not name)."""
    root = project_dir("workflows")
    if root is None:
        return []
    descriptions: dict[str, str] = {}
    try:
        for line in (root / INDEX).read_text(encoding="utf-8").splitlines():
            name, _, text = line.partition("\t")
            if name.strip():
                descriptions[name.strip()] = text.strip()
    except OSError:
        pass
    names = list(descriptions)
    names += sorted(p.name.removesuffix(".json") for p in root.glob("*.json")
                    if not p.name.endswith(".ui.json") and p.stem not in descriptions)
    found = []
    for name in names:
        api, ui = root / f"{name}.json", root / f"{name}.ui.json"
        if api.is_file():
            found.append(Example(name, descriptions.get(name, ""), api, ui if ui.is_file() else None))
    return found


def find_example(text: str) -> Path | None:
    """The file of the example named `text` ("txt2img" -> its API file, "txt2img.ui" or "txt2img.ui.json" -> its
    UI file, "txt2img.json" -> its API file); None when no example has that name."""
    if not text or "/" in text or "\\" in text:
        return None
    for example in examples():
        if text in (example.name, f"{example.name}.json"):
            return example.api
        if example.ui is not None and text in (f"{example.name}.ui", f"{example.name}.ui.json"):
            return example.ui
    return None
