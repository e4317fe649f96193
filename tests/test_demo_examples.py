"""Out of the box: the example workflows run on the shipped demo models and draw what their prompts say."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodegraph.paths import project_dir
from nodegraph_nodes.demo.checker import score

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = project_dir("workflows")


def run_cli(*args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "nodes"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "nodegraph", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd)


@pytest.mark.parametrize("name,node", [("txt2img", "6"), ("img2img", "6"), ("controlnet_canny", "6"),
                                       ("sdxl_refiner", "6")])
def test_example_on_the_demo_models_matches_its_prompt(name, node, tmp_path):
    # no --models-dir: the bundled demo models are found by default, as on a fresh install
    out = run_cli("run", WORKFLOWS / f"{name}.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    image = np.asarray(Image.open(tmp_path / line).convert("RGB"))
    inputs = json.loads((WORKFLOWS / f"{name}.json").read_text())[node]["inputs"]
    caption = inputs.get("text") or inputs["text_g"]
    result = score(image, caption)
    assert result.colour and result.shape and result.count, (caption, result)
