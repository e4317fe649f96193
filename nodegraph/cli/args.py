"""The `nodegraph` argument parser: every sub-command's options and the types that parse them (no heavy
imports: `nodegraph --help` loads only this)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import __version__

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
        "tiny_sdxl_clip_g; vae/tiny_sdxl_vae), checkpoints/tiny_sd21_unclip.safetensors (SD 2.1 unCLIP with its CLIP "
        "image encoder) and style_models/tiny_style_model.safetensors. They exercise every code "
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
