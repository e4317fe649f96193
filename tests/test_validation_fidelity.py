"""Validation as ComfyUI does it: a required input missing from an API prompt is `required_input_missing` (in
validate, run, POST /prompt and the websocket), inputs a node does not have are ignored by the server but the CLI
warns about them, `--set` refuses them, and uninstalled node types in UI files are named as `missing_node_type`."""
from __future__ import annotations

import json
from pathlib import Path

from nodegraph.engine import Folders, default_registry, validate_prompt
from nodegraph.engine.validate import unknown_input_message, unknown_inputs
from nodegraph.paths import default_models_dirs
from support.server import open_ws
from test_cli import ARITH, nodegraph

ROOT = Path(__file__).resolve().parents[1]
DEMO = Folders(models_dirs=default_models_dirs())  # the example workflows read the bundled demo models
TXT2IMG = json.loads((ROOT / "workflows" / "txt2img.json").read_text())


def ksampler_id(prompt: dict) -> str:
    return next(nid for nid, node in prompt.items() if node["class_type"] == "KSampler")


def without_seed(rename_to: str | None = None) -> dict:
    prompt = json.loads(json.dumps(TXT2IMG))
    inputs = prompt[ksampler_id(prompt)]["inputs"]
    seed = inputs.pop("seed")
    if rename_to:
        inputs[rename_to] = seed
    return prompt


def test_ksampler_without_seed_steps_or_cfg_is_required_input_missing():
    registry = default_registry()
    assert validate_prompt(TXT2IMG, registry, DEMO).ok
    for name in ("seed", "steps", "cfg"):
        prompt = json.loads(json.dumps(TXT2IMG))
        del prompt[ksampler_id(prompt)]["inputs"][name]
        result = validate_prompt(prompt, registry, DEMO)
        assert not result.ok and result.error["type"] == "prompt_outputs_failed_validation"
        (error,) = result.node_errors[ksampler_id(prompt)]["errors"]
        assert error["type"] == "required_input_missing" and error["extra_info"]["input_name"] == name


def test_misspelt_input_is_missing_and_unknown_with_a_suggestion():
    prompt = without_seed(rename_to="sed")
    result = validate_prompt(prompt, default_registry(), DEMO)
    errors = result.node_errors[ksampler_id(prompt)]["errors"]
    assert [e["type"] for e in errors] == ["required_input_missing"]
    (item,) = unknown_inputs(prompt, default_registry())
    assert (item["input_name"], item["suggestion"]) == ("sed", "seed")
    assert unknown_input_message(item).endswith("unknown input 'sed' on KSampler; did you mean 'seed'?")


def test_cli_validate_and_run_refuse_a_missing_input_and_warn_about_an_unknown_one(tmp_path):
    path = tmp_path / "sed.json"
    path.write_text(json.dumps(without_seed(rename_to="sed")))
    out = nodegraph("validate", path)
    assert out.returncode == 2, out.stdout
    assert "Required input is missing: seed" in out.stdout
    assert "unknown input 'sed' on KSampler; did you mean 'seed'?" in out.stderr
    as_json = json.loads(nodegraph("validate", path, "--json").stdout)
    errors = as_json["node_errors"][ksampler_id(TXT2IMG)]["errors"]
    assert errors[0]["type"] == "required_input_missing"
    run = nodegraph("run", path, cwd=tmp_path)
    assert run.returncode == 2 and "required_input_missing" not in run.stdout
    assert "Required input is missing: seed" in run.stderr and "did you mean 'seed'?" in run.stderr
    assert not (tmp_path / "output").exists()  # nothing ran


def test_cli_warns_about_an_extra_input_but_runs(tmp_path):
    wf = json.loads(json.dumps(ARITH))
    wf["2"]["inputs"]["opp"] = "add"  # op is still there: the extra one is ignored, as ComfyUI does
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(wf))
    out = nodegraph("run", path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[3] 42" in out.stdout
    assert "warning: node 2: unknown input 'opp' on IntMath; did you mean 'op'?" in out.stderr


def test_set_of_an_input_the_node_does_not_have_is_an_error_listing_its_inputs(tmp_path):
    out = nodegraph("run", ROOT / "workflows" / "txt2img.json", "--set", "KSampler.sed=7", cwd=tmp_path)
    assert out.returncode == 2
    assert "has no input 'sed'; did you mean 'seed'?" in out.stderr
    assert "model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise" in out.stderr
    assert not (tmp_path / "output").exists()


def ui_with_uninstalled_types() -> dict:
    ui = json.loads((ROOT / "workflows" / "txt2img.ui.json").read_text())
    for node in ui["nodes"]:
        if node["type"] == "KSampler":
            node["type"], node["title"] = "FancySampler", "My sampler"
        elif node["type"] == "SaveImage":
            node["type"] = "FancySave"
    return ui


def test_validate_names_each_uninstalled_type_of_a_ui_file(tmp_path):
    ui = ui_with_uninstalled_types()
    ids = {node["type"]: str(node["id"]) for node in ui["nodes"]}
    path = tmp_path / "fancy.ui.json"
    path.write_text(json.dumps(ui))
    out = nodegraph("validate", path)
    assert out.returncode == 2
    assert f"node {ids['FancySampler']} (FancySampler, 'My sampler')" in out.stdout
    assert f"node {ids['FancySave']} (FancySave, " in out.stdout
    assert "Required input is missing" not in out.stdout and "no outputs" not in out.stdout
    body = json.loads(nodegraph("validate", path, "--json").stdout)
    assert body["error"]["type"] == "missing_node_type"
    assert set(body["node_errors"]) == {ids["FancySampler"], ids["FancySave"]}
    for nid, entry in body["node_errors"].items():
        (error,) = entry["errors"]
        assert error["type"] == "missing_node_type" and error["extra_info"]["node_id"] == nid
    sampler = body["node_errors"][ids["FancySampler"]]["errors"][0]["extra_info"]
    assert sampler == {"node_id": ids["FancySampler"], "class_type": "FancySampler", "node_title": "My sampler"}
    run = nodegraph("run", path, cwd=tmp_path)
    assert run.returncode == 2 and "FancySampler" in run.stderr and not (tmp_path / "output").exists()


def test_convert_of_an_api_file_with_uninstalled_types_warns_and_fails(tmp_path):
    prompt = json.loads(json.dumps(TXT2IMG))
    save = next(nid for nid, node in prompt.items() if node["class_type"] == "SaveImage")
    prompt[save]["class_type"] = "FancySave"
    path = tmp_path / "api.json"
    path.write_text(json.dumps(prompt))
    out = nodegraph("convert", path)
    assert out.returncode == 2
    assert f"node {save} (" in out.stderr and "FancySave): node type not installed" in out.stderr
    assert json.loads(out.stdout) == prompt  # still converted, as for UI files
    good = tmp_path / "good.json"
    good.write_text(json.dumps(TXT2IMG))
    assert nodegraph("convert", good).returncode == 0


def test_every_example_workflow_validates():
    for path in sorted((ROOT / "workflows").glob("*.json")):
        out = nodegraph("validate", path)
        assert out.returncode == 0 and "warning" not in out.stderr, (path, out.stdout, out.stderr)


# --- the server: HTTP and websocket ---------------------------------------------------------------------------------

MATH_WITHOUT_OP = {
    "1": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
    "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 3}},
    "3": {"class_type": "ShowText", "inputs": {"value": ["2", 0]}},
}


async def test_post_prompt_refuses_a_missing_required_input_and_accepts_an_extra_one(client):
    response = await client.post("/prompt", json={"prompt": MATH_WITHOUT_OP})
    assert response.status == 400
    body = await response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    (error,) = body["node_errors"]["2"]["errors"]
    assert error["type"] == "required_input_missing" and error["extra_info"]["input_name"] == "op"
    extra = json.loads(json.dumps(MATH_WITHOUT_OP))
    extra["2"]["inputs"].update(op="add", opp="multiply")
    accepted = await client.post("/prompt", json={"prompt": extra})
    assert accepted.status == 200 and (await accepted.json())["node_errors"] == {}


async def test_websocket_prompt_refuses_a_missing_required_input(client):
    ws, _ = await open_ws(client, "validator")
    await ws.send_json({"type": "prompt", "data": {"prompt": MATH_WITHOUT_OP}, "request_id": 7})
    while True:
        message = await ws.receive_json()
        if message["type"] in ("prompt_error", "prompt_queued"):
            break
    assert message["type"] == "prompt_error" and message["data"]["request_id"] == 7
    (error,) = message["data"]["node_errors"]["2"]["errors"]
    assert error["type"] == "required_input_missing" and error["extra_info"]["input_name"] == "op"
    await ws.close()
