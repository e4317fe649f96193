"""`nodegraph run`: validate a workflow, run it headlessly with progress bars and Ctrl+C as interrupt, and print
what it wrote."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .inputs import apply_overrides, make_folders, read_workflow, report_problems, warn_unknown_inputs
from .status import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, fail

if TYPE_CHECKING:
    from ..engine import Folders


def cmd_run(args: argparse.Namespace) -> int:
    from ..engine import Executor, Runtime, default_registry, format_validation
    from ..run_once import PromptRunner
    from ..warmup import import_modules

    env = make_folders(args)
    registry = default_registry()
    for err in registry.load_errors:
        print(f"warning: node pack {err.pack} failed to load: {err.error}", file=sys.stderr)
    loaded = read_workflow(args.workflow, registry, env, keep_unknown=True)
    report_problems(loaded)
    try:
        apply_overrides(loaded.prompt, args.set, lambda name: list(registry.get(name).inputs)
                        if registry.get(name) is not None else None)
    except ValueError as exc:
        return fail(str(exc), EXIT_INVALID)
    warn_unknown_inputs(loaded.prompt, registry)
    runner = PromptRunner(env, registry, Executor(Runtime(env), previews=False))
    result = runner.validate(loaded.prompt)
    if not result.ok or result.node_errors:
        print(format_validation(result, loaded.prompt), file=sys.stderr)
        if not result.ok:
            return EXIT_INVALID

    extra_data = {"extra_pnginfo": {"workflow": loaded.workflow}} if loaded.workflow else {}
    progress = _Progress(result.workflow, enabled=not args.quiet and not args.json)
    # torch & co. first, timed on their own (not inside the first model node's time); Ctrl+C here quits at once
    imports = import_modules(registry.warm_imports(spec.class_type for spec in result.workflow.nodes.values()))
    run = asyncio.run(_run_interruptible(runner, result, extra_data, progress.on_event))
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


async def _run_interruptible(runner: Any, checked: Any, extra_data: dict[str, Any], on_event: Any) -> Any:
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
            runner.executor.interrupt()
        else:
            print("quit", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):
        pass  # not on the main thread (tests) or no signal support
    try:
        return await runner.run_async(checked, str(uuid.uuid4()), extra_data=extra_data, on_event=on_event)
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError):
            pass
        runner.executor.close()


def _output_files(outputs: dict[str, dict[str, Any]], env: Folders) -> list[Path]:
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
