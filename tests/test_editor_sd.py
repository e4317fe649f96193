"""The first-open txt2img graph runs as it is on the SD nodes with a tiny checkpoint, and the PNG it saves carries
the workflow back into the editor when dropped on it."""
from __future__ import annotations

import io
import json
from typing import Any, Iterator

import pytest
from PIL import Image

from editor_fixtures import (  # noqa: F401  (fixtures)
    ROOT,
    VIEWPORT,
    EditorPage,
    playwright_browser,
)
from server_fixtures import ServerThread, http, make_config


@pytest.fixture(scope="module")
def sd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from nodegraph_nodes.diffusion.loader import make_tiny_models

    base = tmp_path_factory.mktemp("editor_sd")
    make_tiny_models(base / "models")
    config = make_config(base, workflows_dir=base / "no_examples", web_root=ROOT / "web")
    with ServerThread(config) as server:
        yield server


@pytest.fixture
def sd_page(playwright_browser: Any, sd_server: ServerThread) -> Iterator[EditorPage]:
    context = playwright_browser.new_context(viewport=VIEWPORT)
    yield EditorPage(context.new_page(), sd_server.url + "/")
    context.close()


def test_default_txt2img_runs_as_it_is_and_its_png_reopens_the_graph(sd_page: EditorPage, playwright_browser,
                                                                      sd_server: ServerThread):
    page = sd_page.open()
    assert page.js("(app) => app.editor.nodeInfo(4).widgets.ckpt_name") == "tiny_sd1"
    # As it is (512 x 512, 20 steps): the server accepts it and the sampler starts; a CPU needs minutes for all
    # of it, so it is stopped once the sampler shows progress and its live preview.
    with page.page.expect_response("**/api/prompt") as answer:
        page.page.click("#queue-button")
    assert answer.value.status == 200 and answer.value.json()["node_errors"] == {}
    page.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(3).progress > 0", timeout=0)
    page.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(3).preview", timeout=0)
    page.screenshot("editor-txt2img-running")
    page.page.click("#interrupt-button")
    page.page.wait_for_selector(".job[data-status='cancelled']", timeout=0)

    # The same graph at 128 x 128 with 3 steps runs to the end.
    for node_id, name, value in ((5, "width", 128), (5, "height", 128), (3, "steps", 3)):
        page.js("(app, a) => app.editor.setWidgetValue(a[0], a[1], a[2])", [node_id, name, value])
    with page.page.expect_request("**/api/prompt") as request_info:
        page.page.click("#queue-button")
    body = request_info.value.post_data_json
    assert body["prompt"]["3"]["class_type"] == "KSampler"
    assert "control_after_generate" not in body["prompt"]["3"]["inputs"]
    # No time limit on the sampling itself (tests never race the clock).
    page.page.wait_for_function("() => window.nodegraph.editor.nodeInfo(9).images.length > 0", timeout=0)
    assert page.js("(app) => app.editor.nodeInfo(3).widgets.seed") != body["prompt"]["3"]["inputs"]["seed"]
    page.page.wait_for_function("() => document.querySelector('#status-line').textContent.startsWith('Finished')")
    page.screenshot("editor-txt2img")

    status, png, _ = http("GET", page.js("(app) => app.editor.nodeInfo(9).images[0]"))
    assert status == 200
    image = Image.open(io.BytesIO(png))
    assert image.size == (128, 128)
    assert json.loads(image.text["prompt"]) == body["prompt"]
    queued_workflow = body["extra_data"]["extra_pnginfo"]["workflow"]
    assert json.loads(image.text["workflow"]) == queued_workflow

    # Dropped on a fresh editor, the PNG brings back the graph exactly as it was queued.
    context = playwright_browser.new_context(viewport=VIEWPORT)
    try:
        other = EditorPage(context.new_page(), sd_server.url + "/").open({"nodes": [], "links": [], "version": 0.4})
        from test_editor_browser import drop_file  # the same desktop-like drop
        drop_file(other, png, "nodegraph_00001_.png", "image/png")
        other.page.wait_for_function("() => window.nodegraph.editor.nodeIds().length === 7")
        restored = other.js("(app) => app.editor.serializeWorkflow()")
        assert {n["id"]: n["widgets_values"] for n in restored["nodes"]} == \
            {n["id"]: n["widgets_values"] for n in queued_workflow["nodes"]}
        assert sorted(restored["links"]) == sorted(queued_workflow["links"])
        assert other.unexpected_errors() == []
    finally:
        context.close()
    assert page.unexpected_errors() == []
