"""The `nodegraph` command line: run, validate and convert workflows, list nodes, serve the editor and API.

Heavy modules (torch, diffusers, aiohttp) are imported inside the sub-commands that need them, so `nodegraph --help`
and the engine commands start fast.
"""
from __future__ import annotations

import argparse
import importlib.util
import asyncio
import difflib
import errno
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
nodegraph: a workflow node-graph engine and server for diffusion image generation.

A workflow is a graph of typed nodes (load a checkpoint, encode a prompt, sample, decode, save). Workflow files may
be ComfyUI API-format JSON, ComfyUI UI-format JSON (what the editor saves), or a PNG that carries its workflow.

examples:
  nodegraph examples                                        the example workflows shipped with nodegraph
  nodegraph run txt2img --set KSampler.seed=42              run one (by name, or any workflow file)
  nodegraph validate my_workflow.json                       list every problem in a workflow
  nodegraph convert ui_workflow.json > api.json             UI format -> API format
  nodegraph nodes KSampler                                  describe a node type
  nodegraph serve --port 8188                               the ComfyUI-compatible server (API + editor)
"""


WORKFLOW_HELP = ("a workflow file (API JSON, UI JSON, or a PNG that carries its workflow), or the name of an "
                 "example workflow, e.g. txt2img or txt2img.ui (`nodegraph examples` lists them)")


def _add_folder_args(parser: argparse.ArgumentParser, placement: bool = True) -> None:
    """The folder options; `placement` adds the model placement ones (only where models are loaded)."""
    group = parser.add_argument_group("folders")
    group.add_argument(
        "--models-dir",
        action="append",
        type=Path,
        metavar="DIR",
        help="a models root in ComfyUI's layout (checkpoints/, controlnet/, vae/, ...); repeat for several, the "
        "first is where new files go (default: ./models, then the bundled demo models)",
    )
    group.add_argument("--input-dir", type=Path, default=Path("input"),
                       help="images for LoadImage (default: ./input; names not found there are then looked up "
                       "in the example workflows' inputs, read-only)")
    group.add_argument(
        "--output-dir", type=Path, default=Path("output"), help="where SaveImage writes (default: ./output)"
    )
    group.add_argument(
        "--temp-dir", type=Path, default=None, help="where PreviewImage writes (default: <output-dir>/../temp)"
    )
    if not placement:
        return
    models = parser.add_argument_group("model placement")
    models.add_argument(
        "--device",
        default="auto",
        help="where models run: auto (CUDA if present, else MPS, else CPU), cpu, cuda, cuda:N, mps (default: auto)",
    )
    models.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="model weights' precision: auto = bf16 (or fp16) on CUDA, fp32 on the CPU",
    )
    models.add_argument(
        "--vram-budget",
        type=_size,
        metavar="SIZE",
        help="bytes of accelerator memory models may use, e.g. 6G (default: free memory minus 1.5 GiB)",
    )
    models.add_argument(
        "--ram-budget",
        type=_size,
        metavar="SIZE",
        help="bytes of RAM loaded models may use before the least recently used are dropped, e.g. 16G "
        "(default: 75%% of available RAM)",
    )
    models.add_argument(
        "--disable-metadata", action="store_true", help="do not embed the workflow in saved PNG files"
    )


def _size(text: str) -> int:
    """Parse sizes like 512M, 6G, 1.5GiB or a plain number of bytes."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = value[-1] if value and value[-1] in units else ""
    try:
        number = float(value[: -1] if unit else value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 512M, 6G or a number of bytes)") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"a size cannot be negative: {text!r}")
    return int(number * units[unit])


def make_folders(args: argparse.Namespace) -> Any:
    from .engine import Folders
    from .paths import default_models_dirs, example_input_dirs

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodegraph", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"nodegraph {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a workflow file headlessly",
        description="Validate and run a workflow (API JSON, UI JSON, or a PNG carrying a workflow), with a progress "
        "bar. Prints the files it wrote. Exit status: 0 done, 1 a node failed, 2 invalid workflow, 130 interrupted.",
    )
    run.add_argument("workflow", help=WORKFLOW_HELP)
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="override a literal input before running, e.g. --set 3.seed=42 or --set KSampler.steps=30 (a node id "
        "or a unique node title; VALUE is read as JSON when it parses, else as text); repeatable",
    )
    run.add_argument("--json", action="store_true", help="print the result (outputs, timings) as JSON")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar, only the output files")
    _add_folder_args(run)

    validate = sub.add_parser(
        "validate",
        help="check a workflow and report every problem",
        description="Check a workflow without running it. Prints every problem (node, input, expected and received "
        "value) and exits 2 if any output cannot run, 0 if all can.",
    )
    validate.add_argument("workflow", help=WORKFLOW_HELP)
    validate.add_argument("--json", action="store_true", help="print ComfyUI's error object (node_errors) as JSON")
    _add_folder_args(validate, placement=False)

    convert = sub.add_parser(
        "convert",
        help="print the API-format JSON of a UI-format workflow or a PNG",
        description="Convert a workflow file (ComfyUI UI format, API format, or a PNG carrying a workflow) to the "
        "API format that POST /prompt takes (or, with --to ui, to a laid-out UI workflow), and print it. Nodes "
        "whose type is not installed are reported on stderr by id, type and title, and the exit status is then 2.",
    )
    convert.add_argument("workflow", help=WORKFLOW_HELP)
    convert.add_argument(
        "--to",
        choices=["api", "ui"],
        default="api",
        help="api (default): the format POST /prompt takes; ui: a laid-out editor workflow (schema 0.4) that "
        "ComfyUI's editor and ours open",
    )
    convert.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")

    nodes = sub.add_parser(
        "nodes",
        help="list the installed node types, or describe one",
        description="Without a name: every installed node type by category. With a name: its inputs (type, default, "
        "range, choices) and outputs. Also reports node packs that failed to load.",
    )
    nodes.add_argument("name", nargs="?", help="a node type (class_type), e.g. KSampler")
    nodes.add_argument("--json", action="store_true", help="print the object_info record(s) as JSON")
    _add_serve_parser(sub)

    sub.add_parser(
        "examples",
        help="list the example workflows that run, validate and convert take by name",
        description="The example workflows shipped with nodegraph, with what each does. Give a name to run, "
        "validate or convert (`nodegraph run txt2img`; NAME.ui for the editor's format). They use the bundled "
        "demo models and work from any directory.",
    )

    tiny = sub.add_parser(
        "make-tiny-models",
        help="write tiny random-weight models (SD1, SD2-v, SDXL base/refiner, ControlNets, VAE) for tests and trials",
        description="Write deterministic tiny random-weight models into a models root in ComfyUI's layout: "
        "checkpoints/tiny_sd1, tiny_sd2 (v-prediction), tiny_sdxl, tiny_sdxl_refiner (each as an original-layout "
        ".safetensors file and as a diffusers folder), controlnet/tiny_controlnet_sd1 (original layout and diffusers "
        "folder), tiny_controlnet_sd1_diffusers_layout.safetensors (diffusers keys, no config), "
        "tiny_controlnet_sdxl.safetensors, vae/tiny_vae.safetensors, loras/tiny_lora_* (kohya, diffusers and pickled "
        "layouts), embeddings/tiny_embedding* (.safetensors, A1111 .pt, SDXL), and the SD1 / SDXL parts as split "
        "files (diffusion_models/tiny_sd1_unet, tiny_sdxl_unet; text_encoders/tiny_sd1_clip_l, tiny_sdxl_clip_l, "
        "tiny_sdxl_clip_g; vae/tiny_sdxl_vae). They exercise every code "
        "path of real models in seconds; their images are noise.",
    )
    tiny.add_argument("directory", type=Path, help="the models root to write into (created if missing)")
    tiny.add_argument("--seed", type=int, default=0, help="weights seed (default 0); the same seed writes the same bytes")

    models = sub.add_parser(
        "models",
        help="list model files, or what a running server has loaded",
        description="Without --server: the model files in the models roots, by folder. With --server URL: the "
        "models a running `nodegraph serve` holds (component, device, bytes) and the cache's hit / miss / eviction "
        "counters, from its /system_stats.",
    )
    models.add_argument("--server", metavar="URL", help="a running server, e.g. http://127.0.0.1:8188")
    models.add_argument("--token", help="the server's access token, if it has one")
    models.add_argument("--json", action="store_true", help="print JSON")
    _add_folder_args(models, placement=False)
    return parser


def _add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the ComfyUI-compatible server (HTTP API, websocket, editor)",
        description="Serve the ComfyUI-compatible HTTP API and websocket, and the editor from web/. Prompts run one "
        "at a time in this process, or several at once on a Ray cluster with --executor ray; the queue and history are kept in SQLite under --data-dir and survive restarts. Binds "
        "127.0.0.1 unless --listen is given; listening beyond loopback requires an access token (given with "
        "--auth-token, or generated and printed). See docs/api.md.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8188, help="port (default: 8188; 0 picks a free one)")
    serve.add_argument(
        "--listen",
        nargs="?",
        const="0.0.0.0",
        metavar="ADDR",
        help="listen on ADDR (default with the flag: 0.0.0.0, all interfaces); overrides --host",
    )
    serve.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="require this token (at least 16 characters) on every request (Authorization: Bearer TOKEN, or "
        "?token=TOKEN); generated and printed when listening beyond loopback without one. Visible in the process "
        "list: prefer --auth-token-file or the NODEGRAPH_AUTH_TOKEN environment variable",
    )
    serve.add_argument("--auth-token-file", type=Path, metavar="PATH",
                       help="read the access token from this file (its first line)")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="let pages from this origin (scheme://host[:port]) call the server cross-origin; "
                       "may be given several times")
    serve.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                       help="largest image any decode may produce, width x height x frames (default: 8192x8192)")
    serve.add_argument("--max-output-size", type=float, default=1.0, metavar="MB",
                       help="largest display output of one node, stored in the history and sent to clients "
                       "(default: 1)")
    serve.add_argument("--max-prompt-size", type=float, default=16.0, metavar="MB",
                       help="largest workflow (with its extra data) accepted and stored (default: 16)")
    serve.add_argument("--data-dir", type=Path, default=Path("data"), help="queue, history, user settings and "
                       "saved workflows (default: ./data)")
    serve.add_argument("--max-upload-size", type=float, default=100.0, metavar="MB",
                       help="largest request body, uploads included (default: 100)")
    serve.add_argument("--cache", choices=("lru", "none"), default="lru",
                       help="node output cache across prompts: lru (default) or none (recompute everything)")
    serve.add_argument("--cache-entries", type=int, default=512, metavar="N",
                       help="most node results the lru cache keeps (default: 512)")
    serve.add_argument("--max-history", type=int, default=10000, metavar="N",
                       help="finished prompts kept in the history, oldest dropped first (default: 10000)")
    serve.add_argument("--preview-size", type=int, default=512, metavar="PX",
                       help="largest side of live preview images (default: 512)")
    serve.add_argument("--preview-method", choices=("none", "auto", "latent2rgb", "taesd"), default="none",
                       help="live previews on the websocket, as ComfyUI's flag: none (default: no binary preview "
                       "frames), auto or latent2rgb (fast latent -> RGB), taesd (TAESD decoder from "
                       "models/vae_approx, else latent -> RGB); a prompt may ask for another in "
                       "extra_data.preview_method, as the editors do")
    serve.add_argument("--web-root", type=Path, help="serve the editor from this folder instead of web/ (e.g. "
                       "comfyui_frontend_package/static)")
    serve.add_argument("--frontend", choices=("nodegraph", "comfyui"), default="nodegraph",
                       help="editor served at /: nodegraph's own (default) or the official ComfyUI frontend, "
                       "if you installed it (pip install comfyui-frontend-package)")
    ray = serve.add_argument_group("executor (see docs/ray.md)")
    ray.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="where prompts run: local (this process, one at a time; default) or ray (a pool of Ray "
                     "workers, one device each; pip install 'nodegraph[ray]')")
    ray.add_argument("--concurrency", type=_concurrency, default=1, metavar="N|auto",
                     help="run up to N prompts at once on one device and one model cache (with --executor ray: on "
                     "each worker), their UNet calls batched into shared forwards (default: 1, one at a time; auto: "
                     f"{AUTO_CONCURRENCY['cpu']} on a CPU, {AUTO_CONCURRENCY['cuda']} on a GPU)")
    ray.add_argument("--max-batch", type=int, default=16, metavar="ROWS",
                     help="with --concurrency: most rows (samples, counting CFG's two halves) one shared UNet forward "
                     "holds (default: 16)")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="the Ray cluster to join: auto (one started with `ray start` on this machine) or "
                     "ray://host:10001; default: start a local Ray instance")
    ray.add_argument("--workers", type=_workers, default=None, metavar="N|auto",
                     help="Ray workers to keep (default: auto, one per GPU of the cluster, one per node without "
                     "GPUs; follows nodes joining and leaving)")
    ray.add_argument("--worker-cpus", type=float, default=1.0, metavar="N",
                     help="CPUs each Ray worker reserves (default: 1)")
    ray.add_argument("--worker-output-dir", type=Path, metavar="DIR",
                     help="Ray workers write outputs under DIR and send the files to the server (default: workers "
                     "on this machine write into --output-dir, workers on other nodes into a temporary folder)")
    _add_folder_args(serve)


# `--concurrency auto`, per device kind: from bench/bench_concurrency.py (README "Serving many users at once").
AUTO_CONCURRENCY = {"cpu": 8, "cuda": 8}


def _concurrency(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"between 1 and 256 prompts at once, got {value}")
    return value


def _auto_concurrency(device: str) -> int:
    """`--concurrency auto` on the device `--device` picks (no torch import when the answer does not need it)."""
    if device == "cpu":
        return AUTO_CONCURRENCY["cpu"]
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return AUTO_CONCURRENCY["cuda" if cuda else "cpu"]


def _workers(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1 worker")
    return value


# --- helpers ---------------------------------------------------------------------------------------------------------


def resolve_workflow(text: str | Path) -> Path:
    """A workflow argument: an existing file, else an example workflow of that name, else the path as given (so
    reading it reports the missing file)."""
    path = Path(text)
    if path.exists():
        return path
    from .examples import find_example

    return find_example(str(text)) or path


def _load(path: str | Path, registry: Any, env: Any, keep_unknown: bool = False) -> Any:
    from .formats import WorkflowFormatError, load_workflow

    def node_info(class_type: str) -> dict[str, Any] | None:
        info = registry.object_info(env, class_type)
        return info.get(class_type)

    resolved = resolve_workflow(path)
    if not resolved.exists():
        raise SystemExit(_fail(f"cannot read workflow {path}: no such file, and no example workflow of that name "
                               "(`nodegraph examples` lists them)", EXIT_INVALID))
    try:
        return load_workflow(resolved, node_info, keep_unknown=keep_unknown)
    except (OSError, WorkflowFormatError) as exc:
        raise SystemExit(_fail(f"cannot read workflow {path}: {exc}", EXIT_INVALID))


def _fail(message: str, code: int) -> int:
    print(f"nodegraph: {message}", file=sys.stderr)
    return code


def _report_problems(loaded: Any) -> None:
    for problem in loaded.problems:
        print(f"warning: {problem}", file=sys.stderr)


def _warn_unknown_inputs(prompt: Any, registry: Any) -> None:
    """Inputs a node does not have are ignored when it runs (as ComfyUI does); in a file they are usually typos."""
    from .engine.validate import unknown_input_message, unknown_inputs

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


# --- commands --------------------------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from .engine import default_registry, format_validation, validate_prompt

    env = make_folders(args)
    registry = default_registry()
    loaded = _load(args.workflow, registry, env, keep_unknown=True)
    _report_problems(loaded)
    _warn_unknown_inputs(loaded.prompt, registry)
    result = validate_prompt(loaded.prompt, registry, env)
    if args.json:
        print(json.dumps(result.response() if not result.ok else {"node_errors": result.node_errors}, indent=2))
    else:
        print(format_validation(result, loaded.prompt))
    return EXIT_OK if result.ok and not result.node_errors else EXIT_INVALID


def cmd_convert(args: argparse.Namespace) -> int:
    from .engine import default_registry

    registry = default_registry()
    loaded = _load(args.workflow, registry, None)
    _report_problems(loaded)
    uninstalled = _uninstalled_nodes(loaded.prompt, registry) if loaded.source not in ("ui", "png_workflow") else []
    for line in uninstalled:
        print(f"warning: {line}", file=sys.stderr)
    result = loaded.prompt
    if args.to == "ui":
        from .engine.uiformat import api_to_ui

        try:
            result = api_to_ui(loaded.prompt, lambda name: registry.object_info(None, name).get(name))
        except ValueError as exc:
            return _fail(str(exc), EXIT_INVALID)
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


def cmd_nodes(args: argparse.Namespace) -> int:
    from .engine import default_registry

    registry = default_registry()
    for err in registry.load_errors:
        print(f"warning: node pack {err.pack} failed to load: {err.error}", file=sys.stderr)
    info = registry.object_info(None)
    if args.name:
        if args.name not in info:
            return _fail(f"no node type {args.name!r}; `nodegraph nodes` lists them", EXIT_INVALID)
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
    from .examples import examples

    found = examples()
    if not found:
        return _fail("no example workflows are installed", EXIT_FAILED)
    width = max(len(e.name) for e in found)
    for example in found:
        print(f"{example.name:<{width}}  {example.description}")
    print(f"\nnodegraph run NAME runs one (files in {found[0].api.parent})")
    return EXIT_OK


def cmd_make_tiny_models(args: argparse.Namespace) -> int:
    from nodegraph_nodes.diffusion.tiny_files import make_tiny_models

    written = make_tiny_models(args.directory, seed=args.seed)
    for name, path in written.items():
        print(f"{name}: {path}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    if args.server:
        return _models_of_server(args)
    from .engine.folders import MODEL_KINDS

    env = make_folders(args)
    listing = {kind: env.list_models(kind) for kind in MODEL_KINDS}
    if args.json:
        print(json.dumps({"roots": [str(p) for p in env.models_dirs], "models": listing}, indent=2))
        return EXIT_OK
    print("models roots: " + ", ".join(str(p) for p in env.models_dirs))
    for kind, names in listing.items():
        print(f"{kind}/: " + (", ".join(names) if names else "(none)"))
    return EXIT_OK


def _models_of_server(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(args.server.rstrip("/") + "/api/system_stats")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            stats = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return _fail(f"cannot read {args.server}/api/system_stats: {exc}", EXIT_FAILED)
    owners = stats.get("nodegraph", {}).get("resources", {})
    models = owners.get("models") if isinstance(owners, dict) else None
    if args.json:
        print(json.dumps(models, indent=2))
        return EXIT_OK
    if not models:
        print("no models loaded (the server has not run a model node yet)")
        return EXIT_OK
    print(f"device {models['device']} ({models['dtype']}), {models['bytes_total'] >> 20} MiB loaded, "
          f"{models['bytes_on_device'] >> 20} MiB on the device")
    for entry in models["loaded"]:
        flag = " (in use)" if entry["in_use"] else ""
        print(f"  {entry['file']}:{entry['component']}  {entry['device']}  {entry['bytes'] >> 20} MiB{flag}")
    print("  " + ", ".join(f"{k} {models[k]}" for k in ("file_reads", "hits", "misses", "offloads", "drops")))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .engine import Executor, Runtime, default_registry, format_validation, validate_prompt
    from .warmup import import_modules

    env = make_folders(args)
    registry = default_registry()
    for err in registry.load_errors:
        print(f"warning: node pack {err.pack} failed to load: {err.error}", file=sys.stderr)
    loaded = _load(args.workflow, registry, env, keep_unknown=True)
    _report_problems(loaded)
    try:
        apply_overrides(loaded.prompt, args.set, lambda name: list(registry.get(name).inputs)
                        if registry.get(name) is not None else None)
    except ValueError as exc:
        return _fail(str(exc), EXIT_INVALID)
    _warn_unknown_inputs(loaded.prompt, registry)
    result = validate_prompt(loaded.prompt, registry, env)
    if not result.ok or result.node_errors:
        print(format_validation(result, loaded.prompt), file=sys.stderr)
        if not result.ok:
            return EXIT_INVALID

    extra_data = {"extra_pnginfo": {"workflow": loaded.workflow}} if loaded.workflow else {}
    progress = _Progress(result.workflow, enabled=not args.quiet and not args.json)
    # torch & co. first, timed on their own (not inside the first model node's time); Ctrl+C here quits at once
    imports = import_modules(registry.warm_imports(spec.class_type for spec in result.workflow.nodes.values()))
    executor = Executor(Runtime(env), previews=False)
    run = asyncio.run(_run_interruptible(executor, result.workflow, extra_data, progress.on_event))
    progress.close()
    if not args.quiet and not args.json and run.timings:
        spent = f"imports {imports:.2f}s, " if imports >= 0.01 else ""
        spent += ", ".join(f"{progress.label(nid)} {seconds:.2f}s" for nid, seconds in run.timings.items())
        print(f"timings: {spent}" + (f" ({len(run.cached)} cached)" if run.cached else ""), file=sys.stderr)
    files = _output_files(run.outputs, env)
    if args.json:
        print(
            json.dumps(
                {
                    "status": run.status,
                    "outputs": run.outputs,
                    "files": [str(f) for f in files],
                    "timings": run.timings,
                    "imports": round(imports, 6),
                    "cached": run.cached,
                    "error": run.error,
                },
                indent=2,
                default=str,
            )
        )
    else:
        for path in files:
            print(path)
        for nid, ui in run.outputs.items():
            for text in ui.get("text", []):
                print(f"[{nid}] {text}")
    if run.status == "error":
        err = run.error or {}
        if not args.json:
            print(
                f"error in node {err.get('node_id')} ({err.get('node_type')}): "
                f"{err.get('exception_type')}: {err.get('exception_message')}",
                file=sys.stderr,
            )
        return EXIT_FAILED
    if run.status == "interrupted":
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


async def _run_interruptible(executor: Any, workflow: Any, extra_data: dict[str, Any], on_event: Any) -> Any:
    """Run with Ctrl+C mapped to the executor's interrupt: the sampler stops cleanly within one model call. A node
    that cannot stop midway (a model still loading) is waited for; a second Ctrl+C ends the process at once."""
    import os
    import uuid

    loop = asyncio.get_running_loop()
    presses = []

    def on_sigint() -> None:
        presses.append(1)
        if len(presses) == 1:
            print("\ninterrupting (Ctrl+C again to quit at once)", file=sys.stderr, flush=True)
            executor.interrupt()
        else:
            print("quit", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):
        pass  # not on the main thread (tests) or no signal support
    try:
        return await executor.run(workflow, str(uuid.uuid4()), extra_data=extra_data, on_event=on_event)
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError):
            pass
        executor.close()


def _output_files(outputs: dict[str, dict[str, Any]], env: Any) -> list[Path]:
    files = []
    for ui in outputs.values():
        for image in ui.get("images", []):
            root = env.root_for(image.get("type", "output"))
            files.append(Path(root) / image.get("subfolder", "") / image["filename"])
    return files


class _Progress:
    """Per-node progress bars on stderr (tqdm), and one line per node with its time or 'cached'."""

    def __init__(self, workflow: Any, enabled: bool):
        self.workflow = workflow
        self.enabled = enabled
        self.bar: Any = None
        self.node: str | None = None

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if event == "execution_cached" and data["nodes"]:
            print(f"cached: {', '.join(self.label(n) for n in data['nodes'])}", file=sys.stderr)
        elif event == "executing":
            self._finish_bar()
            self.node = data["node"]
            print(f"running {self.label(self.node)}", file=sys.stderr)
        elif event == "progress":
            if self.bar is None or self.bar.total != data["max"]:
                self._finish_bar()
                self.bar = tqdm(total=data["max"], desc=f"  {self.label(data['node'])}", file=sys.stderr, leave=True)
            self.bar.n = data["value"]
            self.bar.refresh()

    def label(self, nid: str | None) -> str:
        spec = self.workflow.nodes.get(nid) if nid is not None else None
        return f"{nid} {spec.title}" if spec else str(nid)

    def _finish_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self._finish_bar()


def _serve_token(args: argparse.Namespace) -> str | None:
    """The access token from --auth-token, --auth-token-file or NODEGRAPH_AUTH_TOKEN (at most one of them)."""
    import os

    from .server.config import TOKEN_ENV

    given = [(name, value) for name, value in (("--auth-token", args.auth_token),
                                                 ("--auth-token-file", args.auth_token_file),
                                                 (TOKEN_ENV, os.environ.get(TOKEN_ENV))) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give the access token once: {' and '.join(name for name, _ in given)} are both set")
    if not given:
        return None
    name, value = given[0]
    if name == "--auth-token-file":
        lines = Path(value).read_text(encoding="utf-8").splitlines()
        value = lines[0].strip() if lines else ""
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import secrets

    from .server import ServerConfig, serve
    from .server.config import is_loopback
    from .server.frontends import FrontendMissing, frontend_root

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = args.listen or args.host
    try:
        token = _serve_token(args)
    except (OSError, ValueError) as exc:
        return _fail(str(exc), EXIT_INVALID)
    generated = token is None and not is_loopback(host)
    if generated:
        token = secrets.token_urlsafe(24)  # never expose an unauthenticated server to the network
    limits = (("--port", args.port, 0, 65535), ("--cache-entries", args.cache_entries, 1, 10**9),
              ("--max-history", args.max_history, 1, 10**9), ("--preview-size", args.preview_size, 16, 8192),
              ("--max-upload-size", args.max_upload_size, 0.001, 1 << 20),
              ("--max-output-size", args.max_output_size, 0.001, 1 << 14),
              ("--max-prompt-size", args.max_prompt_size, 0.001, 1 << 14),
              ("--max-image-pixels", args.max_image_pixels or 1, 1, 1 << 40))
    for name, value, low, high in limits:
        if not low <= value <= high:
            return _fail(f"{name} must be between {low} and {high}, got {value}", EXIT_INVALID)
    ray_options = (args.ray_address, args.workers, args.worker_output_dir)
    if args.executor == "local" and any(option is not None for option in ray_options):
        return _fail("--ray-address, --workers and --worker-output-dir need --executor ray", EXIT_INVALID)
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        return _fail("--executor ray needs Ray: pip install 'nodegraph[ray]'", EXIT_INVALID)
    if args.worker_cpus <= 0:
        return _fail(f"--worker-cpus must be above 0, got {args.worker_cpus}", EXIT_INVALID)
    if not 1 <= args.max_batch <= 4096:
        return _fail(f"--max-batch must be between 1 and 4096, got {args.max_batch}", EXIT_INVALID)
    concurrency = _auto_concurrency(args.device) if args.concurrency == "auto" else args.concurrency
    web_root = args.web_root
    if args.frontend != "nodegraph":
        if web_root is not None:
            return _fail("--frontend and --web-root both choose the editor; give one of them", EXIT_INVALID)
        try:
            web_root = frontend_root(args.frontend)
        except FrontendMissing as exc:
            return _fail(f"--frontend {args.frontend}: {exc}", EXIT_INVALID)
    folders = make_folders(args)
    if concurrency > 1:
        folders.settings["max_batch"] = args.max_batch  # read by the model cache (Runtime.max_batch)
    config = ServerConfig(
        folders=folders,
        data_dir=args.data_dir,
        host=host,
        port=args.port,
        auth_token=token,
        announce_token=generated,
        allowed_origins=list(args.allow_origin),
        max_output_size_mb=args.max_output_size,
        max_prompt_size_mb=args.max_prompt_size,
        max_image_pixels=args.max_image_pixels,
        max_upload_size_mb=args.max_upload_size,
        cache=args.cache,
        cache_entries=args.cache_entries,
        max_history=args.max_history,
        preview_size=args.preview_size,
        preview_method=args.preview_method,
        web_root=web_root,
        executor=args.executor,
        concurrency=concurrency,
        max_batch=args.max_batch,
        ray_address=args.ray_address,
        workers=args.workers,
        worker_cpus=args.worker_cpus,
        worker_output_dir=args.worker_output_dir.absolute() if args.worker_output_dir else None,
    )
    try:
        config.check()
    except ValueError as exc:
        return _fail(str(exc), EXIT_INVALID)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = f"; another program (another nodegraph serve?) uses port {args.port}: pick another with --port N"
            hint += ", or --port 0 for any free one"
        return _fail(f"cannot serve on {host}:{args.port}: {exc}{hint}", EXIT_FAILED)
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "convert": cmd_convert,
    "nodes": cmd_nodes,
    "serve": cmd_serve,
    "examples": cmd_examples,
    "make-tiny-models": cmd_make_tiny_models,
    "models": cmd_models,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The `nodegraph` command. Called with `argv` (tests, scripts) it returns the exit status; called as the
    program (argv None) a command that loaded torch ends the process itself (see `_exit_promptly`)."""
    code = _main(argv)
    if argv is None:
        _exit_promptly(code)
    return code


def _exit_promptly(code: int) -> None:
    """End the process without Python's module teardown once torch is loaded.

    Tearing down torch, diffusers and transformers module by module takes 2.5-5 s on a busy 2-core machine, after
    every file is written and closed: a Ctrl+C or a finished run seemed to hang for that long. atexit handlers
    (logging's flush, Ray's shutdown) still run; only the teardown is skipped.
    """
    if "torch" not in sys.modules:
        return
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_INVALID
    try:
        return COMMANDS[args.command](args)
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
