"""Load a workflow from a file in any of the shapes ComfyUI users have at hand.

Accepted: an API prompt JSON; a ``POST /prompt`` body JSON (``{"prompt": ..., "extra_data": ...}``); an editor
(UI-format) workflow JSON; a PNG written by ComfyUI, whose text chunks ``prompt`` (API JSON) and ``workflow``
(UI JSON) carry the graph that made it. Whatever the input, the result holds a runnable API prompt.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nodegraph.engine.uiformat import ConversionProblem, NodeInfo, is_api_format, is_ui_format, ui_to_api

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SourceKind = Literal["api", "prompt_request", "ui", "png_prompt", "png_workflow"]


class WorkflowFormatError(ValueError):
    """The file is not a workflow in any shape we understand; the message says what it is and what was expected."""


@dataclass
class LoadedWorkflow:
    """A workflow read from a file.

    ``prompt`` is the API prompt to run; ``workflow`` the editor graph when the file carried one (to keep in
    ``extra_pnginfo``); ``problems`` what the UI conversion could not carry over; ``source`` where the prompt
    came from: "api", "prompt_request" (a POST /prompt body), "ui" (converted), "png_prompt" (a PNG's
    ``prompt`` chunk) or "png_workflow" (a PNG's ``workflow`` chunk, converted).
    """

    prompt: dict[str, dict[str, Any]]
    workflow: dict[str, Any] | None
    source: SourceKind
    problems: list[ConversionProblem] = field(default_factory=list)


def load_workflow(
    path_or_bytes: str | os.PathLike | bytes, node_info: NodeInfo, keep_unknown: bool = False
) -> LoadedWorkflow:
    """Read a workflow file (or its bytes) and return a runnable API prompt.

    ``node_info(class_type)`` gives the ``object_info`` record of an installed node class (None otherwise);
    it is needed to convert UI-format workflows. ``keep_unknown``: UI nodes whose type is not installed stay in
    the prompt (see ``ui_to_api``), for validation to name them. Raises :class:`WorkflowFormatError` for
    anything that is not a workflow.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, label = bytes(path_or_bytes), "the given data"
    else:
        path = Path(path_or_bytes)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WorkflowFormatError(f"cannot read workflow file {path}: {exc.strerror or exc}") from exc
        label = str(path)
    if data.startswith(PNG_SIGNATURE):
        return _load_png(data, label, node_info, keep_unknown)
    return _load_json_document(_parse_json(data, label), label, node_info, keep_unknown)


def _parse_json(data: bytes, label: str) -> Any:
    """JSON text (UTF-8, BOM tolerated) -> object, or a WorkflowFormatError naming the file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WorkflowFormatError(
            f"{label} is neither a PNG nor UTF-8 JSON text; expected a workflow JSON file or a ComfyUI PNG"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(
            f"{label} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "expected a workflow JSON file or a ComfyUI PNG"
        ) from None


def _load_json_document(document: Any, label: str, node_info: NodeInfo, keep_unknown: bool = False) -> LoadedWorkflow:
    """Dispatch on the shape of a parsed JSON document."""
    if isinstance(document, dict) and "prompt" in document and not is_api_format(document):
        return _load_prompt_request(document, label)
    if is_api_format(document):
        return LoadedWorkflow(document, None, "api")
    if is_ui_format(document):
        result = ui_to_api(document, node_info, keep_unknown)
        return LoadedWorkflow(result.prompt, document, "ui", result.problems)
    raise WorkflowFormatError(f"{label} is JSON but {_describe(document)}; expected an API prompt "
                              "({id: {class_type, inputs}}), a POST /prompt body or an editor workflow (nodes, links)")


def _load_prompt_request(body: dict, label: str) -> LoadedWorkflow:
    """A POST /prompt body: the prompt as sent, plus the editor graph from ``extra_pnginfo`` if present."""
    prompt = body["prompt"]
    if not is_api_format(prompt):
        raise WorkflowFormatError(f"{label} looks like a POST /prompt body but its 'prompt' is {_describe(prompt)}; "
                                  "expected {id: {class_type, inputs}}")
    extra_pnginfo = (body.get("extra_data") or {}).get("extra_pnginfo") or {}
    workflow = extra_pnginfo.get("workflow") if isinstance(extra_pnginfo, dict) else None
    return LoadedWorkflow(prompt, workflow if is_ui_format(workflow) else None, "prompt_request")


def _load_png(data: bytes, label: str, node_info: NodeInfo, keep_unknown: bool = False) -> LoadedWorkflow:
    """A ComfyUI PNG: its ``prompt`` chunk as is, else its ``workflow`` chunk converted."""
    from PIL import Image  # Pillow is only needed for PNG files

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            chunks = dict(getattr(image, "text", {}) or {})
    except (OSError, SyntaxError, ValueError) as exc:
        raise WorkflowFormatError(f"{label} starts like a PNG but cannot be read: {exc}") from None
    prompt = _chunk_json(chunks.get("prompt"))
    workflow = _chunk_json(chunks.get("workflow"))
    workflow = workflow if is_ui_format(workflow) else None
    if is_api_format(prompt):
        return LoadedWorkflow(prompt, workflow, "png_prompt")
    if workflow is not None:
        result = ui_to_api(workflow, node_info, keep_unknown)
        return LoadedWorkflow(result.prompt, workflow, "png_workflow", result.problems)
    found = ", ".join(sorted(chunks)) or "none"
    raise WorkflowFormatError(f"{label} is a PNG without a ComfyUI workflow (text chunks: {found}); "
                              "expected a 'prompt' (API JSON) or 'workflow' (editor JSON) text chunk")


def _chunk_json(text: Any) -> Any:
    """A text chunk parsed as JSON, or None when absent or not JSON (a damaged chunk falls back to the other)."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _describe(value: Any) -> str:
    """A few words on what a JSON value is, for error messages."""
    if isinstance(value, dict):
        keys = ", ".join(list(map(str, value))[:6])
        return f"an object with keys [{keys}]" if value else "an empty object"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__} value"
