"""Validate a prompt, then run it on an executor: the glue that `nodegraph run`, the tests, the benches and the demo
evaluator share.

The server does not use this: it validates on submission and runs later from its queue. Everything else that takes
one API-format prompt to its outputs does these same two steps, so they live here once. This module imports only
the engine (no torch, no HTTP), so the CLI can import it before it knows whether a model will be needed.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from .engine import Executor, NodeRegistry, RunResult, ValidationResult, default_registry, validate_prompt

EventCallback = Callable[[str, dict[str, Any]], None]  # (event, data), as the executor reports them


class InvalidPrompt(ValueError):
    """Raised by `PromptRunner.run` for a prompt that does not validate; `checked` holds every problem."""

    def __init__(self, checked: ValidationResult):
        self.checked = checked
        super().__init__(f"the prompt is invalid: {checked.error} {checked.node_errors}")


class PromptRunner:
    """Validates prompts against one registry and runs them on one executor.

    The executor is kept between runs, so its output cache (and the models its nodes loaded) carry over from one
    prompt to the next, as in the server. `folders` is the node environment (`Folders`) validation and nodes read.
    """

    def __init__(self, folders: Any = None, registry: NodeRegistry | None = None, executor: Executor | None = None):
        self.folders = folders
        self.registry = default_registry() if registry is None else registry
        self.executor = Executor(folders) if executor is None else executor

    def validate(self, prompt: Any, targets: Iterable[str] | None = None) -> ValidationResult:
        """Every problem of `prompt` (and, when it is valid, the workflow to run), as the server would report it."""
        return validate_prompt(prompt, self.registry, self.folders, targets)

    async def run_async(self, prompt: Any, prompt_id: str = "run", extra_data: dict[str, Any] | None = None,
                        on_event: EventCallback | None = None) -> RunResult:
        """Run `prompt` (an API-format dict, or a `validate` result) to its outputs or its error.

        Raises `InvalidPrompt` when it does not validate; a node's failure is not raised but reported in the
        result (`status == "error"`, `error` with the node and the exception), as the server reports it.
        """
        checked = prompt if isinstance(prompt, ValidationResult) else self.validate(prompt)
        if not checked.ok:
            raise InvalidPrompt(checked)
        return await self.executor.run(checked.workflow, prompt_id, extra_data=extra_data, on_event=on_event)

    def run(self, prompt: Any, prompt_id: str = "run", extra_data: dict[str, Any] | None = None,
            on_event: EventCallback | None = None) -> RunResult:
        """`run_async` on a fresh event loop, for callers that have none running."""
        return asyncio.run(self.run_async(prompt, prompt_id, extra_data=extra_data, on_event=on_event))
