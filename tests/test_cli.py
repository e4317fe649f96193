"""The CLI as a user runs it: `python -m nodegraph ...` in a subprocess, on utility-node workflows."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def nodegraph(*args, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "nodes"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "nodegraph", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


ARITH = {
    "1": {"class_type": "PrimitiveInt", "inputs": {"value": 6}, "_meta": {"title": "Six"}},
    "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "op": "multiply", "b": 7}, "_meta": {"title": "Times"}},
    "3": {"class_type": "ShowText", "inputs": {"value": ["2", 0]}},
}


@pytest.fixture
def workflow(tmp_path):
    path = tmp_path / "arith.json"
    path.write_text(json.dumps(ARITH))
    return path


def test_help_explains_each_command():
    out = nodegraph("--help")
    assert out.returncode == 0
    for command in ("run", "validate", "convert", "nodes"):
        assert command in out.stdout
        sub = nodegraph(command, "--help")
        assert sub.returncode == 0 and "usage: nodegraph " + command in sub.stdout


def test_run_prints_outputs(workflow, tmp_path):
    out = nodegraph("run", workflow, "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[3] 42" in out.stdout
    assert "running 2 Times" in out.stderr
    assert "timings: 1 Six " in out.stderr and "2 Times " in out.stderr


def test_run_with_overrides_by_id_and_title(workflow, tmp_path):
    out = nodegraph("run", workflow, "--set", "1.value=5", "--set", "Times.op=\"add\"", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "success" and result["outputs"]["3"] == {"text": ["12"]}
    assert set(result["timings"]) == {"1", "2", "3"}
    bad = nodegraph("run", workflow, "--set", "Nope.value=1", cwd=tmp_path)
    assert bad.returncode == 2 and "no node with id or title 'Nope'" in bad.stderr


def test_run_reports_node_errors(tmp_path):
    wf = json.loads(json.dumps(ARITH))
    wf["2"]["inputs"].update(op="floor_divide", b=0)
    path = tmp_path / "div0.json"
    path.write_text(json.dumps(wf))
    out = nodegraph("run", path, cwd=tmp_path)
    assert out.returncode == 1
    assert "error in node 2 (IntMath): ZeroDivisionError: floor_divide by zero" in out.stderr


def test_validate_lists_every_problem(tmp_path):
    wf = json.loads(json.dumps(ARITH))
    wf["2"]["inputs"].update(op="nope", b="x")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(wf))
    out = nodegraph("validate", path)
    assert out.returncode == 2
    assert "node 2 (IntMath, 'Times')" in out.stdout
    assert "Value not in list: op: 'nope'" in out.stdout and "expected an integer, got 'x'" in out.stdout
    as_json = json.loads(nodegraph("validate", path, "--json").stdout)
    assert as_json["error"]["type"] == "prompt_outputs_failed_validation"
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ARITH))
    assert nodegraph("validate", good).returncode == 0


def test_malformed_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    out = nodegraph("run", path)
    assert out.returncode == 2 and "cannot read workflow" in out.stderr and "broken.json" in out.stderr
    missing = nodegraph("run", tmp_path / "absent.json")
    assert missing.returncode == 2 and "absent.json" in missing.stderr


def test_convert_ui_to_api_and_reports_unknown_nodes(tmp_path):
    ui = {
        "last_node_id": 3,
        "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "PrimitiveInt", "pos": [0, 0], "size": [200, 80], "mode": 0, "order": 0,
             "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [6, "fixed"]},
            {"id": 2, "type": "ShowText", "pos": [300, 0], "size": [200, 80], "mode": 0, "order": 1,
             "inputs": [{"name": "value", "type": "*", "link": 1}], "widgets_values": []},
            {"id": 3, "type": "NotInstalled", "title": "Fancy", "pos": [0, 200], "size": [200, 80], "mode": 0,
             "order": 2, "widgets_values": []},
        ],
        "links": [[1, 1, 0, 2, 0, "INT"]],
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(ui))
    out = nodegraph("convert", path)
    assert out.returncode == 2  # an uninstalled node type is reported, not silently dropped
    assert "3" in out.stderr and "NotInstalled" in out.stderr and "Fancy" in out.stderr
    prompt = json.loads(out.stdout)
    assert prompt["1"] == {"class_type": "PrimitiveInt", "inputs": {"value": 6}, "_meta": {"title": "Int"}}
    assert prompt["2"]["inputs"] == {"value": ["1", 0]}
    ok = tmp_path / "ok.json"
    ui["nodes"] = ui["nodes"][:2]
    ok.write_text(json.dumps(ui))
    run = nodegraph("run", ok, cwd=tmp_path)
    assert run.returncode == 0 and "[2] 6" in run.stdout


def test_run_a_png_that_carries_its_workflow(tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", json.dumps(ARITH))
    path = tmp_path / "carrier.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    out = nodegraph("run", path, cwd=tmp_path)
    assert out.returncode == 0 and "[3] 42" in out.stdout


def test_nodes_lists_and_describes():
    out = nodegraph("nodes")
    assert out.returncode == 0 and "utils/math:" in out.stdout and "IntMath (Int Math)" in out.stdout
    one = nodegraph("nodes", "IntMath")
    assert "op: one of ['add'" in one.stdout and "0: result (INT)" in one.stdout
    assert nodegraph("nodes", "Nope").returncode == 2


def test_examples_are_listed_and_taken_by_name_from_any_directory(tmp_path):
    listed = nodegraph("examples", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines() if line and not line.startswith("nodegraph ")]
    assert {"txt2img", "img2img", "hires_fix", "sdxl_refiner", "controlnet_canny"} <= set(names)
    assert "text to image" in listed.stdout
    valid = nodegraph("validate", "txt2img", cwd=tmp_path)  # tmp_path has no workflows/ folder
    assert valid.returncode == 0, valid.stderr + valid.stdout
    converted = nodegraph("convert", "txt2img.ui", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    assert json.loads(converted.stdout)["6"]["inputs"]["text"] == "a red circle"
    missing = nodegraph("run", "no_such_example", cwd=tmp_path)
    assert missing.returncode == 2
    assert "no such file, and no example workflow of that name" in missing.stderr
    assert "nodegraph examples" in missing.stderr
    # a file of that name in the working directory wins over the example
    (tmp_path / "txt2img").write_text(json.dumps(ARITH))
    mine = nodegraph("run", "txt2img", cwd=tmp_path)
    assert mine.returncode == 0 and "[3] 42" in mine.stdout


def test_help_lists_only_options_that_act():
    for command in ("validate", "models"):
        text = nodegraph(command, "--help").stdout
        for option in ("--device", "--precision", "--vram-budget", "--ram-budget", "--disable-metadata"):
            assert option not in text, (command, option)
        assert "--models-dir" in text
    for command in ("run", "serve"):
        text = nodegraph(command, "--help").stdout
        assert "--device" in text and "--disable-metadata" in text
    for command in ("run", "validate", "convert"):
        assert "the name of an example workflow" in " ".join(nodegraph(command, "--help").stdout.split())
    assert "example workflows' inputs" in " ".join(nodegraph("run", "--help").stdout.split())


def test_a_busy_port_suggests_another(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = nodegraph("serve", "--port", port, "--data-dir", tmp_path / "data", "--output-dir", tmp_path / "out",
                        "--input-dir", tmp_path / "in", cwd=tmp_path)
    assert out.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in out.stderr and "--port" in out.stderr


def test_ctrl_c_stops_a_run_inside_the_sampler(tmp_path):
    """The demo model's txt2img with a very long schedule: one SIGINT once the sampler reports progress stops it
    (exit 130, 'interrupted', no image written); the KSampler never reaches its end."""
    import signal

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "nodes"), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodegraph", "run", "txt2img", "--set", "KSampler.steps=10000"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    seen = ""
    while "/10000" not in seen:
        char = proc.stderr.read(1)
        assert char, seen  # the process ended before sampling started
        seen += char
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate()
    assert proc.returncode == 130, seen + rest
    assert "interrupting" in rest and rest.rstrip().endswith("interrupted")
    assert "10000/10000" not in rest
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").iterdir())
    assert stdout == ""


def test_quiet_run_prints_only_the_files(tmp_path):
    """-q on the demo model: no progress, no library warnings (diffusers' "should be kept in float32: []" was
    printed on every model load), only the file written."""
    out = nodegraph("run", "txt2img", "-q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "output/txt2img_00001_.png\n"
    assert out.stderr == ""
    loud = nodegraph("run", "txt2img", "--set", "KSampler.seed=2", cwd=tmp_path)
    assert loud.returncode == 0
    assert "should be kept in float32" not in loud.stderr and "timings: imports " in loud.stderr
