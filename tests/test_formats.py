"""load_workflow reads every workflow shape users have: API JSON, POST /prompt bodies, editor JSON, ComfyUI PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodegraph.engine.uiformat import ConversionProblem
from nodegraph.formats import LoadedWorkflow, WorkflowFormatError, load_workflow
from support.object_info import UI_DATA, load_ui, node_info
from support.workflows import FRONTEND_TXT2IMG as TXT2IMG, frontend_txt2img as txt2img


def write_png(path: Path, texts: dict[str, str], itxt: bool = False) -> Path:
    """A small PNG carrying ``texts`` as tEXt chunks (or iTXt ones), as ComfyUI's SaveImage writes them."""
    info = PngInfo()
    for key, value in texts.items():
        if itxt:
            info.add_itxt(key, value)
        else:
            info.add_text(key, value)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, pnginfo=info)
    return path


def test_api_json_file(tmp_path):
    path = tmp_path / "api.json"
    path.write_text(json.dumps(TXT2IMG))
    loaded = load_workflow(path, node_info)
    assert loaded == LoadedWorkflow(TXT2IMG, None, "api", [])


def test_api_json_bytes_and_str_path(tmp_path):
    path = tmp_path / "api.json"
    path.write_text(json.dumps(TXT2IMG))
    assert load_workflow(str(path), node_info).prompt == TXT2IMG
    assert load_workflow(json.dumps(TXT2IMG).encode(), node_info).prompt == TXT2IMG


def test_prompt_request_body_keeps_the_editor_workflow(tmp_path):
    ui = load_ui("txt2img_v04.json")
    body = {"client_id": "abc", "prompt": TXT2IMG, "extra_data": {"extra_pnginfo": {"workflow": ui}}}
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    loaded = load_workflow(path, node_info)
    assert loaded == LoadedWorkflow(TXT2IMG, ui, "prompt_request", [])


def test_prompt_request_body_without_workflow(tmp_path):
    loaded = load_workflow(json.dumps({"prompt": TXT2IMG}).encode(), node_info)
    assert loaded == LoadedWorkflow(TXT2IMG, None, "prompt_request", [])


def test_ui_json_file_is_converted():
    path = UI_DATA / "txt2img_v1.json"
    loaded = load_workflow(path, node_info)
    assert loaded.source == "ui"
    assert loaded.workflow == load_ui("txt2img_v1.json")
    assert loaded.prompt["6"]["_meta"]["title"] == "Positive prompt"
    assert loaded.problems == []


def test_ui_json_with_byte_order_mark():
    data = b"\xef\xbb\xbf" + (UI_DATA / "txt2img_v04.json").read_bytes()
    loaded = load_workflow(data, node_info)
    assert (loaded.source, loaded.prompt) == ("ui", TXT2IMG)


def test_png_prefers_the_prompt_chunk(tmp_path):
    prompt = txt2img()
    prompt["3"]["inputs"]["seed"] = 1234  # differs from the workflow chunk, so we can tell which was used
    ui = load_ui("txt2img_v04.json")
    path = write_png(tmp_path / "out.png", {"prompt": json.dumps(prompt), "workflow": json.dumps(ui)})
    loaded = load_workflow(path, node_info)
    assert loaded == LoadedWorkflow(prompt, ui, "png_prompt", [])


def test_png_with_only_a_workflow_chunk_is_converted_with_problems(tmp_path):
    ui = load_ui("unknown_node.json")
    path = write_png(tmp_path / "out.png", {"workflow": json.dumps(ui)}, itxt=True)
    loaded = load_workflow(path, node_info)
    expected = txt2img()
    del expected["9"]["inputs"]["images"]
    assert loaded == LoadedWorkflow(expected, ui, "png_workflow", [
        ConversionProblem("10", "FancyUpscaler", "Fancy upscale 4x", "node type not installed")])


def test_png_with_damaged_prompt_chunk_falls_back_to_workflow(tmp_path):
    ui = load_ui("txt2img_v04.json")
    path = write_png(tmp_path / "out.png", {"prompt": "{not json", "workflow": json.dumps(ui)})
    loaded = load_workflow(path.read_bytes(), node_info)
    assert (loaded.source, loaded.prompt) == ("png_workflow", TXT2IMG)


def test_png_without_workflow_is_an_error(tmp_path):
    path = write_png(tmp_path / "photo.png", {"Software": "a camera"})
    with pytest.raises(WorkflowFormatError, match=r"photo\.png is a PNG without a ComfyUI workflow.*Software"):
        load_workflow(path, node_info)


def test_truncated_png_is_an_error():
    with pytest.raises(WorkflowFormatError, match="starts like a PNG but cannot be read"):
        load_workflow(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, node_info)


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"nodes": [')
    with pytest.raises(WorkflowFormatError, match=r"broken\.json is not valid JSON .*line 1"):
        load_workflow(path, node_info)


def test_binary_garbage_is_an_error():
    with pytest.raises(WorkflowFormatError, match="neither a PNG nor UTF-8 JSON"):
        load_workflow(b"\xff\xfe\x00garbage", node_info)


@pytest.mark.parametrize("document, described", [
    ([1, 2, 3], "a list of 3 items"),
    ({"hello": "world"}, r"an object with keys \[hello\]"),
    ({}, "an empty object"),
    ("text", "a str value"),
])
def test_unknown_json_shape_is_an_error(document, described):
    with pytest.raises(WorkflowFormatError, match=f"is JSON but {described}; expected an API prompt"):
        load_workflow(json.dumps(document).encode(), node_info)


def test_prompt_request_with_bad_prompt_is_an_error():
    body = {"prompt": load_ui("txt2img_v04.json")}
    with pytest.raises(WorkflowFormatError, match="POST /prompt body but its 'prompt' is an object"):
        load_workflow(json.dumps(body).encode(), node_info)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(WorkflowFormatError, match="cannot read workflow file"):
        load_workflow(tmp_path / "nope.json", node_info)
