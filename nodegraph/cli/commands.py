"""The `nodegraph` command: parse the arguments and dispatch to the sub-command."""
from __future__ import annotations

import sys
from typing import Sequence

from .args import build_parser
from .listing import cmd_examples, cmd_make_tiny_models, cmd_models, cmd_nodes
from .run import cmd_run
from .serve import cmd_serve
from .status import EXIT_INTERRUPTED, EXIT_INVALID
from .workflows import cmd_convert, cmd_validate


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
