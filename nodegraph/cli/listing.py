"""The listing commands: `nodegraph nodes`, `examples`, `models` (local files) and `make-tiny-models`."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .client import models_of_server
from .inputs import make_folders
from .status import EXIT_FAILED, EXIT_INVALID, EXIT_OK, fail


def cmd_nodes(args: argparse.Namespace) -> int:
    from ..engine import default_registry

    registry = default_registry()
    for err in registry.load_errors:
        print(f"warning: node pack {err.pack} failed to load: {err.error}", file=sys.stderr)
    info = registry.object_info(None)
    if args.name:
        if args.name not in info:
            return fail(f"no node type {args.name!r}; `nodegraph nodes` lists them", EXIT_INVALID)
        record = info[args.name]
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            print(describe_node(record))
        return EXIT_OK
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    by_category: dict[str, list[str]] = {}
    for name, record in info.items():
        if "alias_of" in record:
            continue
        also = f"; also {', '.join(record['search_aliases'])}" if record.get("search_aliases") else ""
        by_category.setdefault(record["category"], []).append(f"{name} ({record['display_name']}{also})")
    for category in sorted(by_category):
        print(f"{category}:")
        for line in sorted(by_category[category]):
            print(f"  {line}")
    return EXIT_OK


def describe_node(record: dict[str, Any]) -> str:
    lines = [f"{record['name']}: {record['display_name']}  [{record['category']}]"]
    if record.get("description"):
        lines += ["", *("  " + line for line in record["description"].splitlines()), ""]
    lines.append("inputs:")
    for section in ("required", "optional"):
        for name, spec in record["input"].get(section, {}).items():
            kind, opts = spec[0], spec[1] if len(spec) > 1 else {}
            shown = f"one of {kind}" if isinstance(kind, list) else kind
            extras = ", ".join(f"{k}={v!r}" for k, v in opts.items() if k != "tooltip")
            flag = " (optional)" if section == "optional" else ""
            lines.append(f"  {name}: {shown}{flag}" + (f"  [{extras}]" if extras else ""))
            if opts.get("tooltip"):
                lines.append(f"      {opts['tooltip']}")
    lines.append("outputs:")
    for index, (kind, name) in enumerate(zip(record["output"], record["output_name"])):
        lines.append(f"  {index}: {name} ({kind})")
    if record.get("output_node"):
        lines.append("  (an output node: running a workflow runs what output nodes need)")
    return "\n".join(lines)


def cmd_examples(args: argparse.Namespace) -> int:
    from ..examples import examples

    found = examples()
    if not found:
        return fail("no example workflows are installed", EXIT_FAILED)
    width = max(len(e.name) for e in found)
    for example in found:
        print(f"{example.name:<{width}}  {example.description}")
    print(f"\nnodegraph run NAME runs one (files in {found[0].api.parent})")
    return EXIT_OK


def cmd_make_tiny_models(args: argparse.Namespace) -> int:
    from nodegraph_testmodels.files import make_tiny_models

    written = make_tiny_models(args.directory, seed=args.seed)
    for name, path in written.items():
        print(f"{name}: {path}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    if args.server:
        return models_of_server(args)
    from ..engine.folders import MODEL_KINDS

    env = make_folders(args)
    listing = {kind: env.list_models(kind) for kind in MODEL_KINDS}
    if args.json:
        print(json.dumps({"roots": [str(p) for p in env.models_dirs], "models": listing}, indent=2))
        return EXIT_OK
    print("models roots: " + ", ".join(str(p) for p in env.models_dirs))
    for kind, names in listing.items():
        print(f"{kind}/: " + (", ".join(names) if names else "(none)"))
    return EXIT_OK
