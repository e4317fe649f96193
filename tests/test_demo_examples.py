"""Out of the box: the example workflows run on the shipped demo models and draw what their prompts say."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodegraph.examples import examples
from nodegraph.paths import project_dir
from nodegraph_demo.checker import score

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = project_dir("workflows")


def run_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "nodes"), env.get("PYTHONPATH", "")])
    return env


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nodegraph", *map(str, args)], capture_output=True, text=True,
                          env=run_env(), cwd=cwd)


# Examples scored in a test of their own below (quadrant by quadrant; giant shapes); every other one is scored
# against its prompt by the generic test.
OWN_TESTS = {"area_composition", "lora"}
EXAMPLES = [example.name for example in examples() if example.name not in OWN_TESTS]


def test_every_example_is_scored():
    assert {"txt2img", "img2img", "hires_fix", "sdxl_refiner", "sdxl_refiner_advanced", "controlnet_canny",
            "controlnet_mixed"} <= set(EXAMPLES)
    assert {e.name for e in examples()} == set(EXAMPLES) | OWN_TESTS
    source = Path(__file__).read_text()
    for name in OWN_TESTS:
        assert f'"{name}.json"' in source  # scored by its own test


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_on_the_demo_models_matches_its_prompt(name, tmp_path):
    # no --models-dir: the bundled demo models are found by default, as on a fresh install
    out = run_cli("run", WORKFLOWS / f"{name}.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    # the evaluation command scores the PNG against the prompt stored in it
    scored = subprocess.run([sys.executable, "-m", "nodegraph_demo.evaluate", "--image", line],
                            capture_output=True, text=True, cwd=tmp_path, env=run_env())
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert "matches its prompt" in scored.stdout
    # and the checker agrees with the workflow file's own prompt
    image = np.asarray(Image.open(tmp_path / line).convert("RGB"))
    positive = json.loads((WORKFLOWS / f"{name}.json").read_text())["6"]["inputs"]
    assert score(image, positive.get("text") or positive["text_g"]).all


def test_lora_example_draws_giant_shapes_and_strength_zero_does_not(tmp_path):
    """The demo LoRA teaches a style the demo model cannot draw (shapes 42-50 px wide instead of 22-30): on, the
    prompt's object is drawn giant; at strength 0 (the base model exactly) it is drawn at the usual size."""
    from nodegraph_demo.lora_concept import GIANT_MIN_SIDE, main_object_side

    sides = {}
    for strength in (1.0, 0.0):
        out = run_cli("run", WORKFLOWS / "lora.json", "--set", f"Load LoRA.strength_model={strength}",
                      "--set", f"Save Image.filename_prefix=lora_{strength}", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        (line,) = out.stdout.strip().splitlines()
        image = np.asarray(Image.open(tmp_path / line).convert("RGB"))
        scored = score(image, "a blue square")
        assert scored.colour and scored.shape  # the prompt's colour and shape either way
        sides[strength] = main_object_side(image)
    assert sides[1.0] >= GIANT_MIN_SIDE > sides[0.0], sides


def test_area_composition_quadrants_follow_their_prompts(tmp_path):
    """Four prompts in four 64 px areas of a 128 px canvas: each quadrant, scored on its own by the demo checker,
    shows its prompt's colour and shape (over seeds 0-3 the measured rate was 4/4 for three quadrants and 1/4 for
    the red circle, which tends to come out orange; the example's seed 1 gets all four)."""
    out = run_cli("run", WORKFLOWS / "area_composition.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    image = np.asarray(Image.open(tmp_path / line).convert("RGB"))
    assert image.shape == (128, 128, 3)
    workflow = json.loads((WORKFLOWS / "area_composition.json").read_text())
    for i in range(4):
        area = workflow[f"2{i}"]["inputs"]
        text = workflow[area["conditioning"][0]]["inputs"]["text"]
        quadrant = image[area["y"]:area["y"] + 64, area["x"]:area["x"] + 64]
        result = score(quadrant, text)
        assert result.colour and result.shape, (text, result)
