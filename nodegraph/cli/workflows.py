"""`nodegraph validate` and `nodegraph convert`: a workflow checked or converted without running it."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .inputs import make_folders, read_workflow, report_problems, warn_unknown_inputs
from .status import EXIT_INVALID, EXIT_OK, fail


def cmd_validate(args: argparse.Namespace) -> int:
    from ..engine import default_registry, format_validation, validate_prompt

    env = make_folders(args)
    registry = default_registry()
    loaded = read_workflow(args.workflow, registry, env, keep_unknown=True)
    report_problems(loaded)
    warn_unknown_inputs(loaded.prompt, registry)
    result = validate_prompt(loaded.prompt, registry, env)
    if args.json:
        print(json.dumps(result.response() if not result.ok else {"node_errors": result.node_errors}, indent=2))
    else:
        print(format_validation(result, loaded.prompt))
    return EXIT_OK if result.ok and not result.node_errors else EXIT_INVALID


def cmd_convert(args: argparse.Namespace) -> int:
    from ..engine import default_registry

    registry = default_registry()
    loaded = read_workflow(args.workflow, registry, None)
    report_problems(loaded)
    uninstalled = _uninstalled_nodes(loaded.prompt, registry) if loaded.source not in ("ui", "png_workflow") else []
    for line in uninstalled:
        print(f"warning: {line}", file=sys.stderr)
    result = loaded.prompt
    if args.to == "ui":
        from ..engine.uiformat import api_to_ui

        try:
            result = api_to_ui(loaded.prompt, lambda name: registry.object_info(None, name).get(name))
        except ValueError as exc:
            return fail(str(exc), EXIT_INVALID)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return EXIT_INVALID if loaded.problems or uninstalled else EXIT_OK


def _uninstalled_nodes(prompt: Any, registry: Any) -> list[str]:
    """`node ID (TITLE, TYPE): node type not installed` for each node of an API prompt that cannot run here."""
    lines = []
    for nid, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if not isinstance(class_type, str) or registry.get(class_type) is None:
            title = ((node.get("_meta") if isinstance(node, dict) else None) or {}).get("title") or class_type
            lines.append(f"node {nid} ({title}, {class_type}): node type not installed")
    return lines
