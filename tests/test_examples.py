"""The example workflows in workflows/: API and UI formats agree, each runs (on the tiny models), and the CLI runs
them as a user would."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph.engine import default_registry
from nodegraph.formats import load_workflow
from nodegraph.paths import example_input_dirs, project_dir
from nodegraph_nodes.diffusion.loader import make_tiny_models
from sd_fixtures import Runner, make_folders

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = project_dir("workflows")
EXAMPLES = sorted(p.name.removesuffix(".json") for p in WORKFLOWS.glob("*.json") if not p.name.endswith(".ui.json"))
DEMO = "nodegraph-demo-sd1.safetensors"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    make_tiny_models(root)
    return root


def node_info(name):
    return REGISTRY.object_info(None, name).get(name)


REGISTRY = default_registry()


def on_tiny_models(prompt):
    for node in prompt.values():
        if node["inputs"].get("ckpt_name") == DEMO:
            node["inputs"]["ckpt_name"] = "tiny_sd1.safetensors"
    return prompt


def test_there_are_examples():
    assert {"txt2img", "img2img", "hires_fix"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_ui_file_converts_to_the_api_file(name):
    api = load_workflow(WORKFLOWS / f"{name}.json", node_info)
    ui = load_workflow(WORKFLOWS / f"{name}.ui.json", node_info)
    assert api.source == "api" and ui.source == "ui" and ui.problems == []
    assert ui.prompt == api.prompt


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("fmt", ["json", "ui.json"])
def test_example_runs(name, fmt, models_root, tmp_path):
    folders = make_folders(tmp_path, models_root)
    folders.extra_input_dirs = example_input_dirs()
    runner = Runner(folders)
    loaded = load_workflow(WORKFLOWS / f"{name}.{fmt}", node_info)
    run = runner.run(on_tiny_models(loaded.prompt), extra_data={"extra_pnginfo": {"workflow": loaded.workflow}})
    assert run.status == "success", run.error
    (image,) = run.outputs["9"]["images"]
    assert (tmp_path / "output" / image["filename"]).stat().st_size > 0


def test_cli_runs_an_example(models_root, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "nodes"), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", "nodegraph", "run", str(WORKFLOWS / "img2img.ui.json"), "--models-dir", str(models_root),
         "--set", "Load Checkpoint.ckpt_name=tiny_sd1.safetensors", "--set", "KSampler.steps=3"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    assert line.endswith("img2img_00001_.png") and (tmp_path / line).exists()
    assert "KSampler" in out.stderr  # progress lines name the running nodes
