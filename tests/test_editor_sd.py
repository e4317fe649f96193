"""The shipped example workflows in the editor, on the SD nodes and the shipped demo models: the first open shows txt2img fitted and readable at 1280x720, the Examples menu lists each example once, the
example runs as it is (alias class names included), and the PNG it saves carries the workflow back."""
from __future__ import annotations

import io
import json
from typing import Any, Iterator

import pytest
from PIL import Image

from nodegraph.engine import Folders
from support import ROOT
from support.editor import VIEWPORT, EditorPage, text_pixels
from support.server import ServerThread, http, make_config

EXAMPLES = ROOT / "workflows"
DEMO_CHECKPOINT = "nodegraph-demo-sd1.safetensors"
READABLE_ZOOM = 0.6  # ComfyUI draws titles and widget values from about this zoom on


@pytest.fixture(scope="module")
def sd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from nodegraph.paths import default_models_dirs

    base = tmp_path_factory.mktemp("editor_sd")
    # The bundled demo models, as a fresh install finds them.
    folders = Folders(models_dirs=default_models_dirs(), input_dir=base / "input", output_dir=base / "output",
                      temp_dir=base / "temp", extra_input_dirs=[EXAMPLES / "inputs"])
    config = make_config(base, folders=folders, workflows_dir=EXAMPLES, web_root=ROOT / "web")
    with ServerThread(config) as server:
        yield server


@pytest.fixture
def sd_page(playwright_browser: Any, sd_server: ServerThread) -> Iterator[EditorPage]:
    context = playwright_browser.new_context(viewport=VIEWPORT)
    yield EditorPage(context.new_page(), sd_server.url + "/")
    context.close()


def assert_fitted_and_readable(page: EditorPage) -> None:
    """Every node inside the canvas, at a zoom where litegraph draws text, and its title drawn."""
    scale = page.js("(app) => app.editor.canvas.ds.scale")
    assert scale >= READABLE_ZOOM
    box = page.page.locator("#graph-canvas").bounding_box()
    for node_id in page.js("(app) => app.editor.nodeIds()"):
        info = page.js("(app, id) => app.editor.nodeInfo(id)", node_id)
        left, top = page.js("(app, p) => app.editor.toScreen(p)", [info["pos"][0], info["pos"][1] - 30])
        right, bottom = page.js("(app, p) => app.editor.toScreen(p)",
                                [info["pos"][0] + info["size"][0], info["pos"][1] + info["size"][1]])
        assert box["x"] <= left and right <= box["x"] + box["width"], info["title"]
        assert box["y"] <= top and bottom <= box["y"] + box["height"], info["title"]
        assert text_pixels(page, node_id) > 20, f"no title text drawn on {info['title']}"


def test_first_open_shows_the_txt2img_example_fitted_with_readable_text(sd_page: EditorPage):
    page = sd_page.open()
    shipped = json.loads((EXAMPLES / "txt2img.ui.json").read_text())
    assert page.page.inner_text("#workflow-name") == "txt2img"
    assert sorted(page.js("(app) => app.editor.nodeIds()")) == sorted(n["id"] for n in shipped["nodes"])
    assert page.js("(app) => app.editor.nodeInfo(4).widgets.ckpt_name") == DEMO_CHECKPOINT
    assert_fitted_and_readable(page)
    # Widget values are drawn too: KSampler's sampler ("euler") in the right half of its row.
    assert text_pixels(page, 3, widget="sampler_name") > 10
    # The probe tells text from no text: below litegraph's low-quality zoom the same title bar has none.
    page.js("(app) => { app.editor.canvas.ds.scale = 0.45; }")
    assert text_pixels(page, 3) == 0 and text_pixels(page, 3, widget="sampler_name") == 0
    page.js("(app) => app.editor.fitView()")

    # The Examples menu lists each example once, opening its editor layout (NAME.ui.json).
    page.page.click(".menu-button[data-menu='examples']")
    page.page.wait_for_selector(".dropdown .menu-item")
    labels = page.page.locator(".dropdown .menu-item > span:first-child").all_inner_texts()
    hints = page.page.locator(".dropdown .menu-item .hint").all_inner_texts()
    names = sorted(path.name.removesuffix(".ui.json") for path in EXAMPLES.glob("*.ui.json"))
    assert {"txt2img", "img2img", "controlnet_canny", "sdxl_refiner", "inpaint", "lora", "upscale"} <= set(names)
    assert labels == [name.replace("_", " ") for name in names]
    assert hints == [f"{name}.ui.json" for name in names]
    page.page.click(".dropdown .menu-item:has-text('hires fix')")
    page.page.wait_for_function("() => document.querySelector('#workflow-name').textContent === 'hires_fix'")
    assert_fitted_and_readable(page)
    page.screenshot("editor-hires-fix")
    page.js("(app) => app.openExample('img2img.ui.json')")
    assert_fitted_and_readable(page)
    # img2img's LoadImage shows the example input image, served from the examples' input folder.
    page.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(10).images.length === 1")
    status, _, _ = http("GET", page.js("(app) => app.editor.nodeInfo(10).images[0]"))
    assert status == 200
    assert page.unexpected_errors() == []


def test_txt2img_example_runs_as_shipped_and_its_png_reopens_the_graph(sd_page: EditorPage, playwright_browser,
                                                                       sd_server: ServerThread):
    page = sd_page.open()
    with page.page.expect_request("**/api/prompt") as request_info:
        page.page.click("#queue-button")
    body = request_info.value.post_data_json
    # The example names the nodes by their ComfyUI aliases; the server runs them as they are.
    assert body["prompt"]["4"]["class_type"] == "CheckpointLoaderSimple"
    assert body["prompt"]["6"]["class_type"] == "CLIPTextEncode"
    assert "control_after_generate" not in body["prompt"]["3"]["inputs"]
    # No time limit on the sampling itself (tests never race the clock).
    page.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(9).images.length > 0", timeout=0)
    page.page.wait_for_selector(".job[data-status='completed']")
    page.page.wait_for_function("() => document.querySelector('#status-line').textContent.startsWith('Finished')")
    page.page.wait_for_function("() => document.querySelector('.job[data-status=\\'completed\\'] img')?.naturalWidth > 0")
    page.screenshot("editor-txt2img")

    status, png, _ = http("GET", page.js("(app) => app.editor.nodeInfo(9).images[0]"))
    assert status == 200
    image = Image.open(io.BytesIO(png))
    assert image.size == (64, 64)
    assert json.loads(image.text["prompt"]) == body["prompt"]
    queued_workflow = body["extra_data"]["extra_pnginfo"]["workflow"]
    assert json.loads(image.text["workflow"]) == queued_workflow

    # Dropped on a fresh editor, the PNG brings back the graph exactly as it was queued.
    context = playwright_browser.new_context(viewport=VIEWPORT)
    try:
        other = EditorPage(context.new_page(), sd_server.url + "/").open({"nodes": [], "links": [], "version": 0.4})
        from test_editor_browser import drop_file  # the same desktop-like drop
        drop_file(other, png, "txt2img_00001_.png", "image/png")
        other.page.wait_for_function("() => window.nodegraph.editor.nodeIds().length === 7")
        restored = other.js("(app) => app.editor.serializeWorkflow()")
        assert {n["id"]: n["widgets_values"] for n in restored["nodes"]} == \
            {n["id"]: n["widgets_values"] for n in queued_workflow["nodes"]}
        assert sorted(restored["links"]) == sorted(queued_workflow["links"])
        assert other.unexpected_errors() == []
    finally:
        context.close()
    assert page.unexpected_errors() == []


def test_running_sampler_shows_progress_and_live_preview(sd_page: EditorPage):
    page = sd_page.open()
    # At 512 x 512 the sampler runs long enough to be seen at work; it is stopped once it shows both.
    for name in ("width", "height"):
        page.js("(app, name) => app.editor.setWidgetValue(5, name, 512)", name)
    with page.page.expect_response("**/api/prompt") as answer:
        page.page.click("#queue-button")
    assert answer.value.status == 200 and answer.value.json()["node_errors"] == {}
    page.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(3).progress > 0", timeout=0)
    page.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(3).preview", timeout=0)
    page.page.wait_for_selector(".job[data-status='in_progress']")
    page.screenshot("editor-txt2img-running")
    page.page.click("#interrupt-button")
    page.page.wait_for_selector(".job[data-status='cancelled']", timeout=0)
    assert page.js("(app) => app.editor.running") is None
    assert page.unexpected_errors() == []
