"""A non-editable install carries everything the program needs at run time (editor, examples, configs, vocabulary)."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_finds_its_files(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w",
         str(tmp_path / "dist")],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("nodegraph-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("nodegraph/web/index.html", "nodegraph/web/vendor/litegraph/litegraph.es.js",
                     "nodegraph/workflows/txt2img.json", "nodegraph/workflows/inputs/example.png",
                     "nodegraph_nodes/diffusion/configs/sd15/unet/config.json",
                     "nodegraph_nodes/diffusion/data/clip_bpe_merges.txt.gz"):
        assert expected in names, expected
    assert not any(name.startswith(("nodes/", "tests/")) for name in names)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import nodegraph, nodegraph_nodes, json;"
        "from nodegraph.paths import project_dir;"
        "from nodegraph_nodes.diffusion.tokenizer import clip_tokenizer;"
        "print(json.dumps([nodegraph.__file__, str(project_dir('web')), str(project_dir('workflows')),"
        " clip_tokenizer()('a photo of a cat').input_ids]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


    module, web, workflows, ids = json.loads(out.stdout)
    for path in (module, web, workflows):
        assert path.startswith(str(target)), path
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
