"""The registry of node types: built-in packs, third-party packs from entry points, and object_info.

A pack is a module with a `NODES` list of Node classes. Built-in packs are imported by name; third-party packs
register under the `nodegraph.nodes` entry-point group:

    [project.entry-points."nodegraph.nodes"]
    my_pack = "my_package.nodes"

A pack that fails to import or declares a broken node is reported in `load_errors` and skipped; it never stops the
server or the other packs.
"""
from __future__ import annotations

import importlib
import logging
import sys
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Iterable

from .node import Node

if TYPE_CHECKING:
    from .folders import Folders

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nodegraph.nodes"
BUILTIN_PACKS = (
    "nodegraph_nodes.utility",
    "nodegraph_nodes.sd",
    "nodegraph_nodes.strings",
    "nodegraph_nodes.core",
)


@dataclass
class PackError:
    pack: str
    error: str
    traceback: str = ""


class NodeRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, type[Node]] = {}
        self._packs: dict[str, str] = {}  # class_type -> pack name
        self.load_errors: list[PackError] = []

    # --- registration --------------------------------------------------------------------------------------------

    def register(self, cls: type[Node], pack: str = "") -> None:
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise TypeError(f"{cls!r} is not a Node subclass")
        for name in (cls.type_name, *cls.aliases):
            if name in self._nodes and self._nodes[name] is not cls:
                raise ValueError(
                    f"node type {name!r} from {pack or cls.__module__} is already registered "
                    f"by {self._packs.get(name, '?')}"
                )
        for name in (cls.type_name, *cls.aliases):
            self._nodes[name] = cls
            self._packs[name] = pack or cls.__module__

    def register_pack(self, module_name: str, nodes: Iterable[type[Node]] | None = None) -> bool:
        """Import a pack module (or take its node list) and register every node; report and skip on failure."""
        try:
            if nodes is None:
                module = importlib.import_module(module_name)
                nodes = getattr(module, "NODES")
            for cls in list(nodes):
                self.register(cls, pack=module_name)
        except Exception as exc:  # a broken pack must not take the others down
            log.warning("node pack %s was skipped: %s", module_name, exc)
            self.load_errors.append(PackError(module_name, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            return False
        return True

    def load_builtin(self) -> None:
        for name in BUILTIN_PACKS:
            self.register_pack(name)

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                target = ep.load()
            except Exception as exc:
                log.warning("node pack %s (%s) was skipped: %s", ep.name, ep.value, exc)
                self.load_errors.append(PackError(ep.value, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
                continue
            nodes = getattr(target, "NODES", target)
            self.register_pack(ep.value, nodes=nodes if isinstance(nodes, (list, tuple)) else [nodes])

    # --- lookup --------------------------------------------------------------------------------------------------

    def get(self, class_type: str) -> type[Node] | None:
        return self._nodes.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._nodes

    def names(self) -> list[str]:
        return list(self._nodes)

    def pack_of(self, class_type: str) -> str | None:
        return self._packs.get(class_type)

    def warm_imports(self, class_types: Iterable[str] | None = None) -> list[str]:
        """The modules the packs of these node types (default: every pack) import when their nodes first run,
        from each pack module's `WARM_IMPORTS` tuple: what nodegraph.warmup imports ahead of the first prompt."""
        packs = {self._packs[name] for name in (self.names() if class_types is None else class_types)
                 if name in self._packs}
        modules: list[str] = []
        for pack in sorted(packs):
            module = sys.modules.get(pack)
            for name in getattr(module, "WARM_IMPORTS", ()):
                if name not in modules:
                    modules.append(name)
        return modules

    def object_info(self, env: Folders | None = None, class_type: str | None = None) -> dict[str, Any]:
        """ComfyUI's /object_info: every registered name (aliases included) -> its record."""
        names = [class_type] if class_type is not None else self.names()
        info: dict[str, Any] = {}
        for name in names:
            cls = self._nodes.get(name)
            if cls is None:
                continue
            record = cls.object_info(env, name=name)
            record["python_module"] = self._packs[name]
            if name != cls.type_name:
                record["alias_of"] = cls.type_name  # the same node under another name (ComfyUI's, usually)
            elif cls.aliases:
                record["search_aliases"] = list(cls.aliases)
            info[name] = record
        return info


def default_registry(entry_point_packs: bool = True) -> NodeRegistry:
    """The registry the CLI and the server use: built-in packs, then installed third-party packs."""
    registry = NodeRegistry()
    registry.load_builtin()
    if entry_point_packs:
        registry.load_entry_points()
    return registry
