"""`make_registry`: the one way the tests (and benches) build a node registry."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from nodegraph.engine import Node, NodeRegistry


def make_registry(builtin: bool = True,
                  packs: Mapping[str, Sequence[type[Node]] | None] | None = None) -> NodeRegistry:
    """A registry with the built-in packs (unless `builtin` is False) and `packs`: name -> node classes, or
    name -> None for a module imported by that name (e.g. "nodegraph_nodes.utility").

    The default is what the server tests run on: the built-in packs and the test pack `server_nodes` (previews,
    PNGs, failures).
    """
    registry = NodeRegistry()
    if builtin:
        registry.load_builtin()
    if packs is None:
        from . import server_nodes

        packs = {"server_nodes": server_nodes.NODES}
    for name, nodes in packs.items():
        registry.register_pack(name, nodes=None if nodes is None else list(nodes))
    return registry
