"""A non-editable install carries everything the program needs at run time (editor, examples, configs, vocabulary)."""
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the folder it is installed into with pip --target): what `pip install nodegraph` gives."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources, and tests write only to
    # temporary folders. The symlinks that put web/, workflows/ and demo_models/ inside the package are kept.
    source = tmp_path / "source"
    top_level_only = {".git", ".venv", "build", "dist", "output", "input", "temp", "data", "models"}
    anywhere = shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis")

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(anywhere(folder, names))
        return skipped | (top_level_only & set(names)) if Path(folder) == ROOT else skipped

    shutil.copytree(ROOT, source, symlinks=True, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w",
         str(tmp_path / "dist")],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("nodegraph-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    return wheel, target


def installed_env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    return env


def test_wheel_installs_and_finds_its_files(installed, tmp_path):
    wheel, target = installed
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("nodegraph/web/index.html", "nodegraph/web/vendor/litegraph/litegraph.es.js",
                     "nodegraph/workflows/txt2img.json", "nodegraph/workflows/inputs/example.png",
                     "nodegraph_nodes/diffusion/configs/sd15/unet/config.json",
                     "nodegraph_nodes/diffusion/data/clip_bpe_merges.txt.gz"):
        assert expected in names, expected
    assert not any(name.startswith(("nodes/", "tests/")) for name in names)
    assert "nodegraph/workflows/examples.txt" in names

    code = (
        "import nodegraph, nodegraph_nodes, json;"
        "from nodegraph.paths import project_dir;"
        "from nodegraph_nodes.diffusion.tokenizer import clip_tokenizer;"
        "print(json.dumps([nodegraph.__file__, str(project_dir('web')), str(project_dir('workflows')),"
        " clip_tokenizer()('a photo of a cat').input_ids]))"
    )
    env = installed_env(target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


    module, web, workflows, ids = json.loads(out.stdout)
    for path in (module, web, workflows):
        assert path.startswith(str(target)), path
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def readme_first_run() -> list[str]:
    """The commands of the README's "A first run" section, in order: its command block, then the checker's."""
    section = (ROOT / "README.md").read_text().split("## A first run", 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```bash\n")[1:]]
    commands = [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [command for command in commands if command]


def test_the_readme_first_run_works_from_an_empty_directory(installed, tmp_path):
    """Every first-run command of the README, through the installed `nodegraph` program, in an empty directory
    with nothing of the repository on the path (the demo models and examples come from the wheel)."""
    _, target = installed
    commands = readme_first_run()
    assert commands[0] == "nodegraph examples" and "nodegraph run txt2img" in commands
    assert any(c.startswith("python -m nodegraph_demo.evaluate --image") for c in commands)
    program = target / "bin" / "nodegraph"
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in commands:
        argv = shlex.split(command)
        argv = ([sys.executable, str(program)] if argv[0] == "nodegraph" else [sys.executable]) + argv[1:]
        out = subprocess.run(argv, capture_output=True, text=True, cwd=empty, env=installed_env(target))
        assert out.returncode == 0, f"{command}: {out.stderr}{out.stdout}"
        if command == "nodegraph run txt2img":
            assert out.stdout.strip() == "output/txt2img_00001_.png"
        if command.startswith("python -m nodegraph_demo.evaluate"):
            assert "matches its prompt" in out.stdout
    assert sorted(p.name for p in empty.iterdir()) == ["output"]
    written = sorted(p.name for p in (empty / "output").iterdir())
    assert written == ["controlnet_canny_00001_.png", "inpaint_00001_.png", "sdxl_refiner_00001_.png",
                       "txt2img_00001_.png", "txt2img_00002_.png", "txt2img_00003_.png", "upscale_00001_.png"]
