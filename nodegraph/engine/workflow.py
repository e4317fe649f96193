"""The validated workflow the executor runs: nodes with coerced literal inputs and typed links.

The wire format is ComfyUI's API format: `{node_id: {"class_type": str, "inputs": {name: value | [src_id, slot]},
"_meta": {"title": str}}}`. `validate.validate_prompt` turns such a dict into a `Workflow`, or reports every problem.
"""
from __future__ import annotations

import heapq
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
    """The literal inside `{"__value__": ...}`; any other value as it is."""
    if isinstance(value, dict) and "__value__" in value:
        return value["__value__"]
    return value


def wrap_literal(value: Any) -> Any:
    """The inverse of `unwrap_literal` for what needs it: a literal list travels wrapped so it is not read as a link."""
    return {"__value__": value} if isinstance(value, list) else value


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
    """A validated workflow, planned: exactly the nodes `outputs` need, and the order to run them in.

    `order` is a topological order of `nodes` over their links (a node after every node it takes a link from), with
    node ids as the tie-break among independent nodes (see `node_sort_key`), so it is the same on every run.
    """

    nodes: dict[str, NodeSpec]
    outputs: list[str]
    prompt: dict[str, Any]
    order: list[str]


def node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order ("2" before "10"), then the rest; a stable, human-friendly tie-break."""
    head = node_id.split(":", 1)[0]
    return (0, int(head), node_id) if head.isdigit() else (1, 0, node_id)


def run_order(nodes: dict[str, NodeSpec]) -> list[str]:
    """The nodes in dependency order, the smallest `node_sort_key` first among those ready (Kahn's algorithm).

    The links must not form a cycle (validation rejects cycles before it plans).
    """
    waiting = {nid: 0 for nid in nodes}
    consumers: dict[str, list[str]] = {nid: [] for nid in nodes}
    for nid, spec in nodes.items():
        for src in set(spec.sources()):
            waiting[nid] += 1
            consumers[src].append(nid)
    ready = [(node_sort_key(nid), nid) for nid, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, nid = heapq.heappop(ready)
        order.append(nid)
        for consumer in consumers[nid]:
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                heapq.heappush(ready, (node_sort_key(consumer), consumer))
    return order
