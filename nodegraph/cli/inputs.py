"""What the commands read from their arguments: the folders, the workflow (a file or an example's name) and
`--set` overrides, with the warnings a loaded workflow gives."""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .status import EXIT_INVALID, fail

if TYPE_CHECKING:
    from ..engine import Folders


def make_folders(args: argparse.Namespace) -> Folders:
    from ..engine import Folders
    from ..paths import default_models_dirs, example_input_dirs

    models_dirs = list(args.models_dir or [Path("models")]) + default_models_dirs()
    temp_dir = args.temp_dir or Path(args.output_dir).parent / "temp"
    settings = {  # commands without the model placement options (validate, models) get the defaults
        "device": getattr(args, "device", "auto"),
        "precision": getattr(args, "precision", "auto"),
        "vram_budget": getattr(args, "vram_budget", None),
        "ram_budget": getattr(args, "ram_budget", None),
        "disable_metadata": getattr(args, "disable_metadata", False),
    }
    return Folders(
        models_dirs=models_dirs, input_dir=args.input_dir, output_dir=args.output_dir, temp_dir=temp_dir,
        settings=settings, extra_input_dirs=example_input_dirs(),
    )


def resolve_workflow(text: str | Path) -> Path:
    """A workflow argument: an existing file, else an example workflow of that name, else the path as given (so
    reading it reports the missing file)."""
    path = Path(text)
    if path.exists():
        return path
    from ..examples import find_example

    return find_example(str(text)) or path


def read_workflow(path: str | Path, registry: Any, env: Folders | None, keep_unknown: bool = False) -> Any:
    from ..formats import WorkflowFormatError, load_workflow

    def node_info(class_type: str) -> dict[str, Any] | None:
        info = registry.object_info(env, class_type)
        return info.get(class_type)

    resolved = resolve_workflow(path)
    if not resolved.exists():
        raise SystemExit(fail(f"cannot read workflow {path}: no such file, and no example workflow of that name "
                               "(`nodegraph examples` lists them)", EXIT_INVALID))
    try:
        return load_workflow(resolved, node_info, keep_unknown=keep_unknown)
    except (OSError, WorkflowFormatError) as exc:
        raise SystemExit(fail(f"cannot read workflow {path}: {exc}", EXIT_INVALID))


def report_problems(loaded: Any) -> None:
    for problem in loaded.problems:
        print(f"warning: {problem}", file=sys.stderr)


def warn_unknown_inputs(prompt: Any, registry: Any) -> None:
    """Inputs a node does not have are ignored when it runs (as ComfyUI does); in a file they are usually typos."""
    from ..engine.validate import unknown_input_message, unknown_inputs

    for item in unknown_inputs(prompt, registry):
        print(f"warning: {unknown_input_message(item)}", file=sys.stderr)


def apply_overrides(
    prompt: dict[str, Any], overrides: Sequence[str], inputs_of: Callable[[str], list[str] | None] | None = None
) -> None:
    """Apply `NODE.INPUT=VALUE` overrides in place; NODE is a node id or a unique `_meta.title`.

    `inputs_of(class_type)`: the input names of an installed node type (None if it is not installed); with it, an
    input the node does not have is refused, listing the ones it has.
    """
    for item in overrides:
        target, sep, raw = item.partition("=")
        node_ref, dot, input_name = target.rpartition(".")
        if not sep or not dot or not node_ref or not input_name:
            raise ValueError(f"--set {item!r}: expected NODE.INPUT=VALUE, e.g. 3.seed=42")
        if node_ref in prompt:
            node_id = node_ref
        else:
            matches = [
                nid
                for nid, node in prompt.items()
                if isinstance(node, dict) and (node.get("_meta") or {}).get("title") == node_ref
            ]
            if len(matches) != 1:
                found = "no node" if not matches else f"{len(matches)} nodes ({', '.join(matches)})"
                raise ValueError(f"--set {item!r}: {found} with id or title {node_ref!r}")
            node_id = matches[0]
        names = inputs_of(str(prompt[node_id].get("class_type"))) if inputs_of is not None else None
        if names is not None and input_name not in names:
            close = difflib.get_close_matches(input_name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"--set {item!r}: node {node_id} ({prompt[node_id].get('class_type')}) has no input "
                f"{input_name!r}{hint} Its inputs: {', '.join(names) or '(none)'}"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        prompt[node_id].setdefault("inputs", {})[input_name] = value
