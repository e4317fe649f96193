"""Print which package and module of nodegraph imports which, and fail on any import circle.

    python scripts/import_graph.py            # packages, then modules, then circles (exit 1 if any)
    python scripts/import_graph.py --modules  # also every module's imports

Every `import` counts: at the top of a module, inside a function (a lazy import still ties two modules together)
and under `if TYPE_CHECKING:` (an annotation is a dependency too). Packages are the folders one level below
`nodegraph` and `nodegraph_nodes` (`nodegraph.server`, `nodegraph_nodes.diffusion`, ...), and `nodegraph_demo` and
`nodegraph_testmodels` whole; a circle between two packages is reported even when no two modules form one.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"nodegraph": ROOT / "nodegraph", "nodegraph_nodes": ROOT / "nodes" / "nodegraph_nodes",
           "nodegraph_demo": ROOT / "nodegraph_demo", "nodegraph_testmodels": ROOT / "nodegraph_testmodels"}
# Packages of a few modules, above the node packs: each counts as one package in the package graph.
FLAT = {"nodegraph_demo", "nodegraph_testmodels"}


def discover() -> dict[str, Path]:
    """Module name -> file, for every .py file of our top-level packages (symlinked data folders skipped)."""
    modules: dict[str, Path] = {}
    for top, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if any(part.startswith(".") for part in rel.parts) or (folder / rel.parts[0]).is_symlink():
                continue
            parts = [top, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path, is_package: bool) -> set[str]:
    """Absolute names this module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def build(modules: dict[str, Path]) -> nx.DiGraph:
    """The module graph: an edge a -> b when a imports b (b one of ours; `from p import m` counts as p.m)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for name in imported_names(module, path, is_package):
            target = name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # An import of a parent package from inside it (`from . import x` resolving to the package itself)
            # only runs the package's __init__, which every submodule import runs anyway: not an edge.
            if target and target != module and not module.startswith(target + "."):
                graph.add_edge(module, target)
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] in FLAT else ".".join(parts[:2])


def package_graph(graph: nx.DiGraph) -> nx.DiGraph:
    packages = nx.DiGraph()
    packages.add_nodes_from({package_of(m) for m in graph})
    for a, b in graph.edges:
        pa, pb = package_of(a), package_of(b)
        if pa != pb:
            packages.add_edge(pa, pb)
    return packages


def circles(graph: nx.DiGraph) -> list[list[str]]:
    """Each strongly connected group of more than one node, sorted."""
    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", action="store_true", help="also list every module's imports")
    args = parser.parse_args(argv)
    graph = build(discover())
    packages = package_graph(graph)
    print("Packages (-> what each imports):")
    for package in sorted(packages):
        print(f"  {package} -> {', '.join(sorted(packages.successors(package))) or '(nothing of ours)'}")
    if args.modules:
        print("Modules:")
        for module in sorted(graph):
            print(f"  {module} -> {', '.join(sorted(graph.successors(module))) or '-'}")
    found = [("package", c) for c in circles(packages)] + [("module", c) for c in circles(graph)]
    if not found:
        print(f"No import circles ({graph.number_of_nodes()} modules, {graph.number_of_edges()} imports).")
        return 0
    for kind, circle in found:
        print(f"Import circle between {kind}s: {' <-> '.join(circle)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
