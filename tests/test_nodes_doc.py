"""docs/nodes.md lists exactly the registered node types (regenerate with `python scripts/make_nodes_doc.py`)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("make_nodes_doc", ROOT / "scripts" / "make_nodes_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nodes_doc_is_in_step_with_the_registry():
    script = load_script()
    registry = script.builtin_registry()
    text = (ROOT / "docs" / "nodes.md").read_text()
    assert text == script.render(registry), "docs/nodes.md is out of date: run python scripts/make_nodes_doc.py"
    for name in registry.names():  # every name, aliases included, appears in the page
        assert f"| {name} |" in text or f", {name}" in text or f"| {name}," in text, name
