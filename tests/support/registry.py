"""`make_registry`: the one way the tests build a node registry."""
from __future__ import annotations

from collections.abc import Sequence

from nodegraph.engine import Node, NodeRegistry


def make_registry(pack: str | None = "server_nodes", nodes: Sequence[type[Node]] | None = None,
                  builtin: bool = True) -> NodeRegistry:
    """A registry with the built-in packs (unless `builtin` is False) and one test pack.

    The default is what the server tests run on: the built-in packs and `server_nodes` (previews, PNGs, failures).
    `pack=None` adds no test pack; `nodes` gives the classes of another test pack named `pack`.
    """
    registry = NodeRegistry()
    if builtin:
        registry.load_builtin()
    if pack is not None:
        if nodes is None:
            from . import server_nodes

            nodes = server_nodes.NODES
        registry.register_pack(pack, nodes=list(nodes))
    return registry
