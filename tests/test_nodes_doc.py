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


def test_comfyui_core_list_is_well_formed():
    script = load_script()
    core = script.comfyui_core_nodes()
    names = [name for name, _ in core]
    assert len(names) == len(set(names)), "a class_type is listed twice in docs/comfyui_core_nodes.txt"
    for name, module in core:
        assert name and name == name.strip() and "|" not in name, name
        assert module == "nodes" or module.startswith("comfy_extras.nodes_"), (name, module)
        assert not module.startswith("comfy_api_nodes"), "partner-API nodes are not core"
    # nodes.py's mapping and the default comfy_extras modules are both there (the header says where they come from)
    assert {"KSampler", "CheckpointLoaderSimple", "UNETLoader", "DualCLIPLoader", "LoraLoaderModelOnly"} <= set(names)
    assert {"SamplerCustomAdvanced", "ModelMergeSimple", "CheckpointSave", "StringConcatenate"} <= set(names)
    assert dict(core)["Epsilon Scaling"] == "comfy_extras.nodes_eps"  # ComfyUI's one class_type with a space
    assert len(core) == 415


def test_every_comfyui_core_node_is_marked_from_the_registry():
    script = load_script()
    registry = script.builtin_registry()
    known = set(registry.names())
    text = (ROOT / "docs" / "nodes.md").read_text()
    for name, module in script.comfyui_core_nodes():
        if name in known:
            assert f"| {name} | {module} | yes |  |" in text, name
        else:
            assert f"| {name} | {module} | no | {script.why_not(name, module)} |" in text, name


def test_reasons_come_from_the_module_then_the_name():
    script = load_script()
    assert script.why_not("WanImageToVideo", "comfy_extras.nodes_wan").startswith("video")
    assert script.why_not("EmptyHunyuanLatentVideo", "comfy_extras.nodes_hunyuan") == "model family not run (Hunyuan)"
    assert script.why_not("LoraLoader", "nodes") == "LoRA not implemented yet"
    assert script.why_not("SomethingNew", "comfy_extras.nodes_unknown") == "not implemented yet"
