"""The editor in a real browser (headless Chromium via Playwright) against a real nodegraph server.

Each test drives the page the way a user does (mouse on the canvas, buttons, files) and checks the result on both
sides: what the page shows and what the server received or produced. Screenshots of the main states go to a
temporary folder (docs/screenshots/ is redrawn by scripts/make_screenshots.py).
"""
from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodegraph.engine.uiformat import ui_to_api
from support.editor import VIEWPORT, EditorPage, free_port, start_serve
from support.server import http
from support.workflows import math_ui_workflow, pattern_api_prompt


def node(page: EditorPage, node_id: int) -> dict[str, Any]:
    return page.js("(app, id) => app.editor.nodeInfo(id)", node_id)


def editor_prompt(page: EditorPage) -> dict[str, Any]:
    """What the page would POST as `prompt` right now (graphToPrompt over the live graph)."""
    return page.page.evaluate(
        "async () => (await import('./js/prompt.js')).graphToPrompt(window.nodegraph.editor.snapshot()).output")


def object_info(server_url: str) -> dict[str, Any]:
    status, body, _ = http("GET", server_url + "/api/object_info")
    assert status == 200
    return json.loads(body)


def test_page_boots_connected_without_console_errors(editor: EditorPage):
    editor.open()
    assert editor.page.title().endswith("nodegraph")
    # This server has no workflows/txt2img.json: the first open shows the built-in txt2img graph.
    types = editor.js("(app) => app.editor.nodeIds().map((id) => app.editor.nodeInfo(id).type)")
    assert sorted(types) == ["CLIPTextEncode", "CLIPTextEncode", "CheckpointLoaderSimple", "EmptyLatentImage",
                             "KSampler", "SaveImage", "VAEDecode"]
    assert editor.js("(app) => app.editor.nodeInfo(3).widgets.control_after_generate") == "randomize"
    assert editor.page.is_hidden("#empty-hint")
    # The websocket handshake gave the page its client id.
    assert editor.js("(app) => app.api.clientId")
    editor.page.click(".menu-button[data-menu='examples']")
    editor.page.wait_for_selector(".dropdown .menu-item")
    names = editor.page.locator(".dropdown .menu-item .hint").all_inner_texts()
    assert names == ["math.json", "pattern_api.json"]
    editor.page.keyboard.press("Escape")
    editor.js("(app) => app.newWorkflow()")
    assert editor.page.is_visible("#empty-hint")
    editor.screenshot("editor-empty")
    assert editor.unexpected_errors() == []


def test_add_nodes_from_search_and_link_them_with_the_mouse(editor: EditorPage):
    editor.open({"nodes": [], "links": [], "version": 0.4})
    page = editor.page
    page.mouse.dblclick(220, 180)
    page.wait_for_selector(".search-box input:focus")
    page.keyboard.type("int")
    assert page.locator(".search-item .search-title").first.inner_text() == "Int"
    page.keyboard.press("Enter")
    page.mouse.dblclick(620, 200)
    page.wait_for_selector(".search-box input:focus")
    page.keyboard.type("show text")
    page.keyboard.press("Enter")
    page.mouse.dblclick(620, 420)
    page.wait_for_selector(".search-box input:focus")
    page.keyboard.type("savetestimage")
    page.keyboard.press("Enter")
    ids = editor.js("(app) => app.editor.nodeIds()")
    assert [node(editor, i)["type"] for i in ids] == ["PrimitiveInt", "ShowText", "SaveTestImage"]
    int_id, show_id, save_id = ids

    # An INT output dropped on a TEST_IMAGE input is refused: typed sockets.
    editor.drag(editor.screen_point(int_id, {"output": 0}), editor.screen_point(save_id, {"input": "image"}))
    assert node(editor, save_id)["inputs"][0] == {"name": "image", "type": "TEST_IMAGE", "linked": False}
    # On the wildcard input of Show Text it links.
    editor.drag(editor.screen_point(int_id, {"output": 0}), editor.screen_point(show_id, {"input": "value"}))
    assert node(editor, show_id)["inputs"][0]["linked"] is True
    assert node(editor, int_id)["outputs"][0]["links"] == 1

    # The widget is edited with the mouse too: the right arrow of the number steps it up.
    x, y = editor.screen_point(int_id, {"widget": "value"})
    width = node(editor, int_id)["size"][0] * editor.js("(app) => app.editor.canvas.ds.scale")
    page.mouse.click(x + width / 2 - 22, y)
    assert node(editor, int_id)["widgets"]["value"] == 1

    prompt = editor_prompt(editor)
    assert prompt[str(show_id)]["inputs"] == {"value": [str(int_id), 0]}
    assert prompt[str(int_id)]["inputs"] == {"value": 1}  # the control mode is not sent
    editor.screenshot("editor-linked")
    assert editor.unexpected_errors() == []


def test_queue_button_runs_the_workflow_with_progress_previews_and_images(editor: EditorPage, editor_server):
    editor.open()
    page = editor.page
    editor.js("(app) => app.openExample('pattern_api.json')")
    # Count the live previews as they land on the running node (the editor clears them once the node is done).
    editor.js("""(app) => { window.previewsShown = 0;
        app.api.addEventListener("preview", ({ detail }) => { if (detail.nodeId === "1") window.previewsShown++; }); }""")
    with page.expect_request("**/api/prompt") as request_info:
        page.click("#queue-button")
    body = request_info.value.post_data_json
    assert body["client_id"] == editor.js("(app) => app.api.clientId")
    assert body["extra_data"]["extra_pnginfo"]["workflow"]["nodes"]
    assert body["prompt"] == {
        "1": {"inputs": {"width": 320, "height": 240, "steps": 3, "shade": 90}, "class_type": "TestPattern",
              "_meta": {"title": "Test pattern"}},
        "2": {"inputs": {"filename_prefix": "editor", "image": ["1", 0]}, "class_type": "SaveTestImage",
              "_meta": {"title": "Save"}},
    }
    page.wait_for_function("() => window.nodegraph.editor.nodeInfo(2).images.length > 0")
    saved = node(editor, 2)["images"][0]
    assert "filename=editor_" in saved and "type=output" in saved
    # The live previews (binary type-4 frames) landed on the pattern node, and none is left once the run is done.
    assert page.evaluate("() => window.previewsShown") > 0
    page.wait_for_function("() => !window.nodegraph.editor.nodeInfo(1).preview")
    # The image is on the node, in the gallery, and downloadable from the server.
    status, png, _ = http("GET", saved)
    assert status == 200 and png.startswith(b"\x89PNG")
    page.click(".tab[data-tab='results']")
    page.wait_for_selector(".gallery .tile img")
    page.wait_for_function("() => document.querySelector('.gallery .tile img').naturalWidth > 0")
    editor.screenshot("editor-run-results")
    page.click(".gallery .tile img")
    page.wait_for_selector(".lightbox img")
    assert page.get_attribute(".lightbox a.button", "download").startswith("editor_")
    page.keyboard.press("Escape")
    # The queue panel lists the finished job with its duration.
    page.click(".tab[data-tab='queue']")
    page.wait_for_selector(".job[data-status='completed']")
    editor.screenshot("editor-queue")
    assert editor.unexpected_errors() == []


ALIASES = {"CheckpointLoaderSimple": "LoadCheckpoint", "CLIPTextEncode": "CLIPEncode", "BasicScheduler": "NoiseSchedule"}


def test_node_library_lists_each_node_once_and_finds_it_by_an_alias(editor: EditorPage, editor_server):
    info = object_info(editor_server.url)
    assert {name: record["alias_of"] for name, record in info.items() if "alias_of" in record} == ALIASES
    editor.open({"nodes": [], "links": [], "version": 0.4})
    page = editor.page
    page.mouse.dblclick(300, 200)
    page.wait_for_selector(".search-box input:focus")
    listed = page.locator(".search-item").evaluate_all("(items) => items.map((item) => item.dataset.type)")
    assert set(ALIASES.values()) <= set(listed) and not set(ALIASES) & set(listed)
    assert len(listed) == len(set(listed))
    # An alias name finds its primary, first.
    page.keyboard.type("CheckpointLoaderSimple")
    assert page.locator(".search-item").first.get_attribute("data-type") == "LoadCheckpoint"
    page.keyboard.press("Enter")
    (node_id,) = editor.js("(app) => app.editor.nodeIds()")
    assert node(editor, node_id)["type"] == "LoadCheckpoint"
    # litegraph's Add Node menu (right click) lists it once as well.
    page.mouse.click(700, 600, button="right")
    page.click(".litecontextmenu .litemenu-entry:has-text('Add Node')")
    page.locator(".litecontextmenu").last.locator(".litemenu-entry", has_text="loaders").click()
    entries = page.locator(".litecontextmenu").last.locator(".litemenu-entry").all_inner_texts()
    assert entries.count("Load Checkpoint") == 1
    page.keyboard.press("Escape")
    # A workflow naming the alias still loads as that type (not "not installed") and queues it by that name.
    editor.js("(app, p) => app.loadDocument(p, 'aliases', {quiet: true})",
              {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}}})
    assert node(editor, 4)["title"] == "Load Checkpoint"
    assert editor_prompt(editor)["4"]["class_type"] == "CheckpointLoaderSimple"
    assert editor.unexpected_errors() == []


def test_control_after_generate_applies_after_each_queue(editor: EditorPage):
    workflow = math_ui_workflow()
    workflow["nodes"][0]["widgets_values"] = [10, "increment"]
    workflow["nodes"][1]["widgets_values"] = [5, "randomize"]
    editor.open(workflow)
    sent = []
    editor.page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/api/prompt") else None)
    for expected in (10, 11):
        editor.page.click("#queue-button")
        editor.page.wait_for_function(f"() => window.nodegraph.editor.nodeInfo(1).widgets.value === {expected + 1}")
    assert [body["prompt"]["1"]["inputs"]["value"] for body in sent] == [10, 11]
    assert sent[0]["prompt"]["2"]["inputs"]["value"] == 5  # queued as shown, then randomized
    assert node(editor, 2)["widgets"]["value"] != sent[1]["prompt"]["2"]["inputs"]["value"]
    # The control value is saved in widgets_values (ComfyUI layout) and never sent to the server.
    saved = editor.js("(app) => app.editor.serializeWorkflow()")
    assert saved["nodes"][0]["widgets_values"] == [12, "increment"]
    assert "control_after_generate" not in sent[0]["prompt"]["1"]["inputs"]
    assert editor.unexpected_errors() == []


def test_saved_workflow_reopens_identical_and_converts_like_the_server(editor: EditorPage, tmp_path, editor_server):
    editor.open(math_ui_workflow())
    page = editor.page
    page.click(".menu-button[data-menu='workflow']")
    page.click(".menu-item:has-text('Save…')")
    page.fill(".modal .text-input", "my math")
    with page.expect_download() as download_info:
        page.click(".modal button[type='submit']")
    download = download_info.value
    assert download.suggested_filename == "my math.json"
    path = tmp_path / "saved.json"
    download.save_as(path)
    saved = json.loads(path.read_text())
    assert saved["version"] == 0.4
    assert saved["links"] == math_ui_workflow()["links"]
    assert [n["widgets_values"] for n in saved["nodes"]] == [[2, "fixed"], [3, "fixed"], [0, "add", 0], []]
    assert saved["groups"][0]["title"] == "Numbers"

    page.click(".menu-button[data-menu='workflow']")
    page.click(".menu-item:has-text('New')")
    assert editor.js("(app) => app.editor.nodeIds()") == []
    page.set_input_files("#file-input", str(path))
    page.wait_for_function("() => window.nodegraph.editor.nodeIds().length === 4")
    assert editor.js("(app) => app.editor.serializeWorkflow()") == saved
    # The page's prompt is what the server's own converter makes of the saved file.
    info = object_info(editor_server.url)
    assert editor_prompt(editor) == ui_to_api(saved, info.get).prompt
    assert editor.unexpected_errors() == []


def png_with(chunks: dict[str, Any]) -> bytes:
    """A small PNG with JSON text chunks, as ComfyUI's SaveImage writes them."""
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, json.dumps(value))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (40, 90, 160)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def drop_file(editor: EditorPage, data: bytes, name: str, mime: str) -> None:
    """Drop a file on the canvas (the browser's DataTransfer, as a real drag from the desktop delivers it)."""
    editor.page.evaluate(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            const target = document.getElementById('graph-canvas');
            for (const type of ['dragenter', 'dragover', 'drop']) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        [base64.b64encode(data).decode(), name, mime],
    )


def test_png_drop_restores_its_workflow(editor: EditorPage):
    editor.open({"nodes": [], "links": [], "version": 0.4})
    workflow = math_ui_workflow()
    drop_file(editor, png_with({"workflow": workflow, "prompt": {"x": {"class_type": "Nope", "inputs": {}}}}),
              "ComfyUI_00001_.png", "image/png")
    editor.page.wait_for_function("() => window.nodegraph.editor.nodeIds().length === 4")
    assert node(editor, 3)["widgets"] == {"a": 0, "op": "add", "b": 0}
    assert node(editor, 3)["inputs"][0]["linked"] is True
    assert editor.page.inner_text("#workflow-name") == "ComfyUI_00001_"
    # A PNG with only the API prompt is imported and laid out automatically.
    drop_file(editor, png_with({"prompt": pattern_api_prompt()}), "api_only.png", "image/png")
    editor.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(2)?.type === 'SaveTestImage'")
    first, second = node(editor, 1), node(editor, 2)
    assert first["pos"][0] + first["size"][0] < second["pos"][0]  # left to right, no overlap
    assert editor_prompt(editor)["2"]["inputs"]["image"] == ["1", 0]
    # A workflow JSON file dropped the same way.
    drop_file(editor, json.dumps(math_ui_workflow()).encode(), "math.json", "application/json")
    editor.page.wait_for_function("() => window.nodegraph.editor.nodeIds().length === 4")
    assert editor.unexpected_errors() == []


def test_validation_error_is_shown_on_the_offending_node_and_input(editor: EditorPage):
    editor.open()
    editor.js("(app) => app.openExample('pattern_api.json')")
    editor.js("(app) => app.editor.setWidgetValue(1, 'width', 99999)")  # beyond the widget's max of 4096
    editor.page.click("#queue-button")
    editor.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(1).errors !== null")
    errors = node(editor, 1)["errors"]
    assert errors["inputs"] == ["width"]
    assert "width" in errors["messages"][0] and "4096" in errors["messages"][0]
    assert node(editor, 2)["errors"] is None
    toast = editor.page.locator(".toast.error").first
    assert "#1 Test pattern: width" in toast.inner_text()
    editor.screenshot("editor-validation-error")
    # The server's 400 answer is reported by Chromium as a failed resource; nothing else may be logged.
    assert editor.unexpected_errors("status of 400") == []


def test_execution_error_names_the_node_and_message(editor: EditorPage):
    editor.open()
    editor.js("(app) => app.loadDocument({'5': {class_type: 'Explode', inputs: {message: 'the pipe burst'}}}, 'x')")
    editor.page.click("#queue-button")
    editor.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(5).errors !== null")
    assert node(editor, 5)["errors"]["messages"] == ["ValueError: the pipe burst"]
    assert "Explode failed" in editor.page.locator(".toast.error").first.inner_text()
    editor.page.click(".tab[data-tab='queue']")
    editor.page.wait_for_selector(".job[data-status='failed'] .job-error")
    assert editor.unexpected_errors() == []


@pytest.mark.parametrize("mode", [2, 4])
def test_muted_and_bypassed_nodes_follow_comfyui(editor: EditorPage, mode: int, editor_server):
    """Mode 2 drops the node and links to it; mode 4 passes the matching input through (COMPAT 3.3)."""
    workflow = math_ui_workflow()
    workflow["nodes"][2]["mode"] = mode  # Int Math: its first INT input `a` stands in for its INT output
    editor.open(workflow)
    prompt = editor_prompt(editor)
    assert "3" not in prompt
    expected = {} if mode == 2 else {"value": ["1", 0]}
    assert prompt["4"]["inputs"] == expected
    assert prompt == ui_to_api(workflow, object_info(editor_server.url).get).prompt


def test_reconnects_after_a_server_restart_without_losing_the_graph(playwright_browser, tmp_path):
    port = free_port()
    server = start_serve(tmp_path, port)
    context = playwright_browser.new_context(viewport=VIEWPORT)
    try:
        page = EditorPage(context.new_page(), f"http://127.0.0.1:{port}/").open(math_ui_workflow())
        page.js("(app) => app.editor.setWidgetValue(2, 'value', 40)")  # an edit the server never saw
        server.terminate()
        server.wait()
        page.page.wait_for_selector("#connection[data-state='offline']")
        server = start_serve(tmp_path, port)
        page.page.wait_for_selector("#connection[data-state='online']")
        page.page.wait_for_selector(".toast.success:has-text('Reconnected')")
        assert node(page, 2)["widgets"]["value"] == 40
        page.page.click("#queue-button")
        page.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(4).text === '42'")
        # A reload (or a browser restart) brings the same graph back from localStorage.
        page.page.reload()
        page.page.wait_for_selector("body[data-ready='true']")
        assert node(page, 2)["widgets"]["value"] == 40
        assert len(page.js("(app) => app.editor.nodeIds()")) == 4
        # While the server was away the page logged the failed socket; nothing else.
        assert page.unexpected_errors("WebSocket connection to", "ERR_CONNECTION_REFUSED") == []
    finally:
        context.close()
        server.terminate()
        server.wait()


def sleep_prompt(seconds: float, text: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": text}},
        "2": {"class_type": "Sleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "ShowText", "inputs": {"value": ["2", 0]}},
    }


def test_queue_panel_cancels_stops_and_deletes_jobs(editor: EditorPage):
    editor.open()
    page = editor.page
    editor.js("(app, p) => app.loadDocument(p, 'sleepy', {quiet: true})", sleep_prompt(30, "first"))
    page.keyboard.press("Control+Enter")  # the shortcut queues like the button
    page.wait_for_function("() => window.nodegraph.editor.running?.id === 2")
    # The running node shows its progress bar while it sleeps.
    page.wait_for_function("() => window.nodegraph.editor.nodeInfo(2).progress > 0")
    editor.js("(app) => app.editor.setWidgetValue(1, 'value', 'second')")
    page.click("#queue-button")
    page.wait_for_selector(".job[data-status='pending']")
    assert page.inner_text("#queue-count") == "2"
    editor.screenshot("editor-running")
    page.click(".job[data-status='pending'] [data-action='cancel']")
    page.wait_for_selector(".job[data-status='pending']", state="detached")
    page.click("#interrupt-button")
    page.wait_for_selector(".job[data-status='cancelled']")
    page.wait_for_selector("#queue-count", state="hidden")
    assert editor.js("(app) => app.editor.running") is None
    count = page.locator(".job").count()
    page.click(".job[data-status='cancelled'] [data-action='delete']")
    page.wait_for_function(f"() => document.querySelectorAll('.job').length === {count - 1}")
    assert editor.unexpected_errors() == []


def test_load_image_upload_button_sends_the_file_and_selects_it(editor: EditorPage, tmp_path):
    # Listening from the start turns Chromium's file chooser interception on before the click (enabling it only
    # inside expect_file_chooser races with the click).
    editor.page.on("filechooser", lambda chooser: None)
    editor.open({"nodes": [], "links": [], "version": 0.4})
    node_id = editor.js("(app) => app.addFromSearch(app.defs.get('LoadImage'), {position: [80, 80], link: null})")
    picture = tmp_path / "cat.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(picture)
    with editor.page.expect_file_chooser() as chooser:
        editor.page.mouse.click(*editor.screen_point(node_id, {"widget": "upload"}))
    chooser.value.set_files(str(picture))
    editor.page.wait_for_function(f"() => window.nodegraph.editor.nodeInfo({node_id}).widgets.image === 'cat.png'")
    assert editor_prompt(editor)[str(node_id)]["inputs"] == {"image": "cat.png"}  # the button is not an input
    assert "filename=cat.png" in node(editor, node_id)["images"][0] and "type=input" in node(editor, node_id)["images"][0]
    choices = editor.js("(app) => app.defs.get('LoadImage').inputs[0].widget.options.values")
    assert "cat.png" in choices
    assert editor.js("(app) => app.editor.serializeWorkflow().nodes[0].widgets_values") == ["cat.png", "image"]
    assert editor.unexpected_errors() == []
