"""The `nodegraph` command line: run, validate and convert workflows, list nodes, serve the editor and API.

One module per concern: `args` (the parser), `inputs` (folders, the workflow argument, `--set`), `run`, `workflows`
(validate, convert), `listing` (nodes, examples, models, make-tiny-models), `serve` (serve options -> ServerConfig),
`client` (what a running server reports), `commands` (dispatch), `status` (exit codes). Heavy modules (torch,
diffusers, aiohttp) are imported inside the sub-commands that need them, so `nodegraph --help` and the engine commands
start fast.
"""
from .args import build_parser
from .commands import COMMANDS, main
from .inputs import apply_overrides, make_folders, resolve_workflow
from .listing import describe_node
from .status import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK

__all__ = [
    "COMMANDS", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_INVALID", "EXIT_OK", "apply_overrides", "build_parser",
    "describe_node", "main", "make_folders", "resolve_workflow",
]
