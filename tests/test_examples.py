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
from support.sd import Runner, make_folders

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = project_dir("workflows")
EXAMPLES = sorted(p.name.removesuffix(".json") for p in WORKFLOWS.glob("*.json") if not p.name.endswith(".ui.json"))
# The demo models the examples name -> the tiny models the tests run instead.
DEMO_MODELS = {
    "ckpt_name": {
        "nodegraph-demo-sd1.safetensors": "tiny_sd1.safetensors",
        "nodegraph-demo-sdxl-base.safetensors": "tiny_sdxl.safetensors",
        "nodegraph-demo-sdxl-refiner.safetensors": "tiny_sdxl_refiner.safetensors",
    },
    "control_net_name": {"nodegraph-demo-canny.safetensors": "tiny_controlnet_sd1.safetensors"},
    "lora_name": {"nodegraph-demo-giant.safetensors": "tiny_lora_sd1_kohya.safetensors"},
    "model_name": {"nodegraph-demo-esrgan-4x.safetensors": "tiny_esrgan_x4.safetensors"},
}
TINY_SIZE = 64  # the SDXL examples ask for 1024 x 1024: far too slow for the tiny models on a CPU


def node_info(name):
    return REGISTRY.object_info(None, name).get(name)


REGISTRY = default_registry()


def on_tiny_models(prompt):
    for node in prompt.values():
        for name, tiny in DEMO_MODELS.items():
            value = node["inputs"].get(name)
            if isinstance(value, str) and value in tiny:
                node["inputs"][name] = tiny[value]
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=min(node["inputs"]["width"], TINY_SIZE),
                                  height=min(node["inputs"]["height"], TINY_SIZE))
    return prompt


def test_there_are_examples():
    assert {"txt2img", "img2img", "hires_fix", "sdxl_refiner", "sdxl_refiner_advanced", "controlnet_canny",
            "controlnet_mixed", "lora"} <= set(EXAMPLES)


def test_sdxl_refiner_examples_give_the_same_image(models_root, tmp_path):
    """The SDXLRefiner node and the KSamplerAdvanced pair are the same computation."""
    runner = Runner(make_folders(tmp_path, models_root))
    latents = []
    for name in ("sdxl_refiner", "sdxl_refiner_advanced"):
        run = runner.run(on_tiny_models(load_workflow(WORKFLOWS / f"{name}.json", node_info).prompt))
        assert run.status == "success", run.error
        latents.append(run.values["11"][0]["samples"])
    assert latents[0].shape == (1, 4, TINY_SIZE // 8, TINY_SIZE // 8)
    assert latents[0].equal(latents[1])


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
