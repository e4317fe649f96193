"""The registry: object_info from declarations, aliases, third-party packs, broken packs skipped; import cost."""
import subprocess
import sys
import textwrap

import pytest

from nodegraph.engine import Combo, Input, Int, Node, NodeRegistry, Output, String, default_registry


class Sampler(Node):
    """Denoise something."""

    display_name = "My Sampler"
    category = "sampling"
    aliases = ("ComfySampler",)
    model = Input("MODEL", tooltip="the model")
    seed = Int(0, min=0, max=2**64 - 1, control_after_generate=True)
    name = Combo(["euler", "ddim"])
    text = String("", multiline=True, optional=True)
    outputs = (Output("LATENT", tooltip="the result"),)

    def execute(self, **kw):
        return (None,)


def test_object_info_record_from_declaration():
    registry = NodeRegistry()
    registry.register(Sampler, pack="tests")
    info = registry.object_info()["Sampler"]
    assert info["input"]["required"] == {
        "model": ["MODEL", {"tooltip": "the model"}],
        "seed": ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "step": 1, "control_after_generate": True}],
        "name": [["euler", "ddim"], {"default": "euler"}],
    }
    assert info["input"]["optional"] == {"text": ["STRING", {"default": "", "multiline": True}]}
    assert info["input_order"] == {"required": ["model", "seed", "name"], "optional": ["text"]}
    assert info["output"] == ["LATENT"] and info["output_name"] == ["LATENT"]
    assert info["output_tooltips"] == ["the result"]
    for key in ("name", "display_name", "description", "category", "output_node", "python_module"):
        assert key in info  # required by the ComfyUI frontend's schema
    assert info["display_name"] == "My Sampler" and info["description"] == "Denoise something."
    assert info["python_module"] == "tests"
    # an alias resolves to the same class and gets its own record
    assert registry.get("ComfySampler") is Sampler
    assert registry.object_info()["ComfySampler"]["name"] == "ComfySampler"
    assert registry.object_info()["ComfySampler"]["alias_of"] == "Sampler"
    assert info["search_aliases"] == ["ComfySampler"]


def test_duplicate_names_are_refused():
    registry = NodeRegistry()
    registry.register(Sampler)

    class Other(Node):
        type_name = "ComfySampler"

    with pytest.raises(ValueError, match="already registered"):
        registry.register(Other)


def test_broken_pack_is_reported_and_skipped():
    registry = NodeRegistry()
    assert not registry.register_pack("no_such_module_anywhere")
    assert not registry.register_pack("bad", nodes=[object])
    assert registry.register_pack("nodegraph_nodes.utility")
    assert [e.pack for e in registry.load_errors] == ["no_such_module_anywhere", "bad"]
    assert "ModuleNotFoundError" in registry.load_errors[0].error
    assert "IntMath" in registry


def test_entry_point_packs_load_and_broken_ones_are_skipped(tmp_path, monkeypatch):
    (tmp_path / "good_pack.py").write_text(
        textwrap.dedent(
            """
            from nodegraph.engine import Int, Node, Output

            class Triple(Node):
                value = Int(1)
                outputs = (Output("INT"),)
                def execute(self, value):
                    return (value * 3,)

            NODES = [Triple]
            """
        )
    )
    (tmp_path / "bad_pack.py").write_text("raise ImportError('this pack is broken')\n")
    dist = tmp_path / "fake_packs-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-packs\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nodegraph.nodes]\ngood = good_pack\nbad = bad_pack\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = default_registry()
    assert "Triple" in registry and registry.pack_of("Triple") == "good_pack"
    assert any(e.pack == "bad_pack" and "this pack is broken" in e.error for e in registry.load_errors)
    assert "IntMath" in registry  # built-ins still there


def test_engine_and_help_do_not_import_torch():
    code = (
        "import sys, nodegraph.engine, nodegraph.cli, nodegraph_nodes.utility;"
        "from nodegraph.engine import default_registry; default_registry();"
        "bad = [m for m in ('torch', 'diffusers', 'transformers', 'aiohttp') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=".", env=_env())
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "nodegraph", "--help"], capture_output=True, text=True, env=_env())
    assert out.returncode == 0 and "run" in out.stdout and "validate" in out.stdout


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([".", "nodes", env.get("PYTHONPATH", "")])
    return env
