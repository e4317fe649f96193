"""The validated workflow the executor runs: nodes with coerced literal inputs and typed links.

The wire format is ComfyUI's API format: `{node_id: {"class_type": str, "inputs": {name: value | [src_id, slot]},
"_meta": {"title": str}}}`. `validate.validate_prompt` turns such a dict into a `Workflow`, or reports every problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .node import Node


@dataclass(frozen=True)
class Link:
    """A connection from output `slot` of node `node`."""

    node: str
    slot: int


def is_link(value: Any) -> bool:
    """ComfyUI's rule: any two-element list is a link `[node_id, output_index]`.

    (Literal lists travel wrapped as `{"__value__": [...]}`, see `unwrap_literal`.)
    """
    return isinstance(value, list) and len(value) == 2


def unwrap_literal(value: Any) -> Any:
    if isinstance(value, dict) and "__value__" in value:
        return value["__value__"]
    return value


@dataclass
class NodeSpec:
    """One node of a workflow, ready to run."""

    id: str
    cls: type[Node]
    class_type: str
    title: str
    constants: dict[str, Any] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)

    def sources(self) -> Iterator[str]:
        for link in self.links.values():
            yield link.node


@dataclass
class Workflow:
    """A validated workflow: the nodes needed by `outputs`, in no particular order (see `executor` for order)."""

    nodes: dict[str, NodeSpec]
    outputs: list[str]
    prompt: dict[str, Any]


def node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order ("2" before "10"), then the rest; a stable, human-friendly tie-break."""
    head = node_id.split(":", 1)[0]
    return (0, int(head), node_id) if head.isdigit() else (1, 0, node_id)
