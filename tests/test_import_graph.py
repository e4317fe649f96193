"""The import graph of nodegraph's packages and modules (scripts/import_graph.py): no new import circles.

Two circles predate the script and are being taken apart (the server <-> distributed packages through `Job` and
`ServerConfig`, and the server's state <-> worker); they are listed here so that
this test fails on any other circle, and also when one of them is gone (then delete it from the list).
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import import_graph  # noqa: E402

KNOWN = {
    ("package", ("nodegraph.distributed", "nodegraph.server")),
    ("module", ("nodegraph.distributed.pool", "nodegraph.server.executors")),
    ("module", ("nodegraph.server.state", "nodegraph.server.worker")),
}


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
