"""The import graph of nodegraph's packages and modules (scripts/import_graph.py): no new import circles.

None is left: any circle fails this test. A circle being taken apart over several changes may be listed in KNOWN
meanwhile; the test then also fails once it is gone (delete it from the list).
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import import_graph  # noqa: E402

KNOWN: set[tuple[str, tuple[str, ...]]] = set()


def test_no_import_circles_beyond_the_known_ones():
    graph = import_graph.build(import_graph.discover())
    found = {("package", tuple(c)) for c in import_graph.circles(import_graph.package_graph(graph))}
    found |= {("module", tuple(c)) for c in import_graph.circles(graph)}
    assert found - KNOWN == set(), "a new import circle"
    assert KNOWN - found == set(), "a known circle is gone: remove it from KNOWN"


def test_the_engine_imports_nothing_of_the_rest():
    graph = import_graph.package_graph(import_graph.build(import_graph.discover()))
    assert set(graph.successors("nodegraph.engine")) == set()
    for pack in ("nodegraph_nodes.sd", "nodegraph_nodes.diffusion"):
        assert not {p for p in graph.successors(pack) if p.startswith("nodegraph.") and p != "nodegraph.engine"}


def test_the_script_prints_the_graph_and_reports_circles():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py")], capture_output=True, text=True)
    assert "Packages (-> what each imports):" in out.stdout
    assert "nodegraph.engine -> (nothing of ours)" in out.stdout
    assert out.returncode == (1 if KNOWN else 0)
    for kind, members in KNOWN:
        assert f"Import circle between {kind}s: {' <-> '.join(members)}" in out.stdout


def test_a_circle_is_found(tmp_path):
    import networkx as nx

    graph = nx.DiGraph([("a.x", "a.y"), ("a.y", "a.z"), ("a.z", "a.x"), ("a.z", "b.w")])
    assert import_graph.circles(graph) == [["a.x", "a.y", "a.z"]]


def test_only_the_cli_imports_the_demo_and_test_model_packages():
    """Training, evaluation and the test-model writers sit above the node packs: they import the packs, and
    nothing below them imports them (the CLI's make-tiny-models is the one caller in nodegraph)."""
    graph = import_graph.package_graph(import_graph.build(import_graph.discover()))
    for package in ("nodegraph_demo", "nodegraph_testmodels"):
        assert set(graph.predecessors(package)) <= {"nodegraph.cli", "nodegraph_demo"}, package
    assert "nodegraph_nodes.diffusion" in set(graph.successors("nodegraph_testmodels"))
