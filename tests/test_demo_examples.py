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
from nodegraph_nodes.demo.checker import score

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = project_dir("workflows")


def run_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "nodes"), env.get("PYTHONPATH", "")])
    return env


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nodegraph", *map(str, args)], capture_output=True, text=True,
                          env=run_env(), cwd=cwd)


EXAMPLES = [example.name for example in examples()]


def test_every_example_is_scored():
    assert {"txt2img", "img2img", "hires_fix", "sdxl_refiner", "sdxl_refiner_advanced", "controlnet_canny",
            "controlnet_mixed"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_on_the_demo_models_matches_its_prompt(name, tmp_path):
    # no --models-dir: the bundled demo models are found by default, as on a fresh install
    out = run_cli("run", WORKFLOWS / f"{name}.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    # the evaluation command scores the PNG against the prompt stored in it
    scored = subprocess.run([sys.executable, "-m", "nodegraph_nodes.demo.evaluate", "--image", line],
                            capture_output=True, text=True, cwd=tmp_path, env=run_env())
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert "matches its prompt" in scored.stdout
    # and the checker agrees with the workflow file's own prompt
    image = np.asarray(Image.open(tmp_path / line).convert("RGB"))
    positive = json.loads((WORKFLOWS / f"{name}.json").read_text())["6"]["inputs"]
    assert score(image, positive.get("text") or positive["text_g"]).all
