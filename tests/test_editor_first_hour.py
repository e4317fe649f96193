"""The editor's first-hour stumbles, each checked in Chromium: a node added from the search lands whole on screen;
validation notes name nodes by their titles, are drawn over the nodes beneath and the notices stay on screen; a
sampler's live preview is gone after the run; result images on nodes come back after a reload; the example layouts
keep their nodes apart once previews and images appear."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from nodegraph.engine import Folders
from support import ROOT
from support.editor import VIEWPORT, EditorPage
from support.server import ServerThread, make_config
from support.workflows import pattern_api_prompt


def node(page: EditorPage, node_id: int) -> dict[str, Any]:
    return page.js("(app, id) => app.editor.nodeInfo(id)", node_id)


def screen_box(page: EditorPage, node_id: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a node on screen, title bar included."""
    info = node(page, node_id)
    left, top = page.js("(app, p) => app.editor.toScreen(p)", [info["pos"][0], info["pos"][1] - 30])
    right, bottom = page.js("(app, p) => app.editor.toScreen(p)",
                            [info["pos"][0] + info["size"][0], info["pos"][1] + info["size"][1]])
    return left, top, right, bottom


def test_a_node_added_near_the_edge_lands_whole_on_screen(editor: EditorPage):
    editor.open({"nodes": [], "links": [], "version": 0.4})
    page = editor.page
    canvas = page.locator("#graph-canvas").bounding_box()
    for x, y in ((canvas["x"] + canvas["width"] - 15, canvas["y"] + canvas["height"] - 15), (canvas["x"] + 8, 70)):
        page.mouse.dblclick(x, y)
        page.wait_for_selector(".search-box input:focus")
        page.keyboard.type("savetestimage")
        page.keyboard.press("Enter")
    for node_id in editor.js("(app) => app.editor.nodeIds()"):
        left, top, right, bottom = screen_box(editor, node_id)
        assert canvas["x"] <= left and right <= canvas["x"] + canvas["width"], (node_id, left, right, canvas)
        assert canvas["y"] <= top and bottom <= canvas["y"] + canvas["height"], (node_id, top, bottom, canvas)
    editor.screenshot("first-hour-search-edge")
    assert editor.unexpected_errors() == []


def test_validation_notes_use_titles_sit_over_the_next_node_and_notices_stay_on_screen(editor: EditorPage):
    editor.open()
    page = editor.page
    prompt = pattern_api_prompt()
    prompt["2"]["inputs"].pop("image")  # a required input left unlinked
    prompt["2"]["_meta"]["title"] = "My saver"
    prompt["3"] = {"class_type": "SaveTestImage", "inputs": {"image": ["1", 0], "filename_prefix": "x"},
                   "_meta": {"title": "Below"}}
    editor.js("(app, p) => app.loadDocument(p, 'broken', {quiet: true})", prompt)
    # put "Below" right under "My saver", where the note goes
    editor.js("(app) => { const g = app.editor.graph; const a = g.getNodeById(2), b = g.getNodeById(3);"
              " b.pos = [a.pos[0], a.pos[1] + a.size[1] + 40]; app.editor.canvas.setDirty(true, true); }")
    for _ in range(4):  # several failed attempts: several notices
        page.click("#queue-button")
        page.wait_for_function("() => window.nodegraph.editor.nodeInfo(2).errors !== null")
    messages = node(editor, 2)["errors"]["messages"]
    assert messages and "image" in messages[0]
    assert "SaveTestImage" not in " ".join(messages), messages  # the class name, not what the user sees
    toast = page.locator(".toast.error").first
    assert "My saver" in toast.inner_text() and "SaveTestImage" not in toast.inner_text()
    # The note is drawn after every node: at its place the canvas shows the note, not "Below"'s body.
    info = node(editor, 2)
    x, y = editor.js("(app, p) => app.editor.toScreen(p)", [info["pos"][0] + 20, info["pos"][1] + info["size"][1] + 14])
    below = node(editor, 3)
    assert below["pos"][1] - 30 < info["pos"][1] + info["size"][1] + 14  # the note's place is on "Below"
    colour = page.evaluate("""([x, y]) => {
        const canvas = document.getElementById('graph-canvas');
        const rect = canvas.getBoundingClientRect();
        const ratio = canvas.width / rect.width;
        return Array.from(canvas.getContext('2d').getImageData(Math.round((x - rect.left) * ratio),
          Math.round((y - rect.top) * ratio), 1, 1).data).slice(0, 3); }""", [x, y])
    assert abs(colour[0] - 90) <= 6 and abs(colour[1] - 20) <= 6 and abs(colour[2] - 24) <= 6, colour
    # Every notice lies inside the window.
    for box in page.locator(".toast").evaluate_all("(items) => items.map((t) => t.getBoundingClientRect().toJSON())"):
        visible = page.locator(".toasts").bounding_box()
        assert box["right"] <= VIEWPORT["width"] and box["left"] >= 0
        assert visible["y"] >= 0 and visible["y"] + visible["height"] <= VIEWPORT["height"]
    editor.screenshot("first-hour-validation")
    assert editor.unexpected_errors("status of 400") == []


def test_the_samplers_preview_is_cleared_and_results_survive_a_reload(editor: EditorPage):
    editor.open()
    page = editor.page
    editor.js("(app) => app.openExample('pattern_api.json')")
    page.click("#queue-button")
    page.wait_for_function("() => window.nodegraph.editor.nodeInfo(2).images.length > 0", timeout=0)
    page.wait_for_function("() => document.querySelector('#status-line').textContent.startsWith('Finished')")
    assert node(editor, 1)["preview"] is False  # TestPattern sent previews while it ran; none is left
    images = node(editor, 2)["images"]
    editor.js("(app) => app.persist()")
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    assert node(editor, 2)["images"] == images
    page.wait_for_function("() => window.nodegraph.editor.graph.getNodeById(2).ngImages[0].complete")
    editor.screenshot("first-hour-after-reload")
    assert editor.unexpected_errors() == []


@pytest.fixture(scope="module")
def examples_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from nodegraph.paths import default_models_dirs

    base = tmp_path_factory.mktemp("examples")
    folders = Folders(models_dirs=default_models_dirs(), input_dir=base / "input", output_dir=base / "output",
                      temp_dir=base / "temp", extra_input_dirs=[ROOT / "workflows" / "inputs"])
    config = make_config(base, folders=folders, workflows_dir=ROOT / "workflows", web_root=ROOT / "web")
    with ServerThread(config) as server:
        yield server


PICTURE = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
SAMPLERS = {"KSampler", "KSamplerAdvanced", "SDXLRefiner", "SamplerCustom"}
IMAGES = {"SaveImage", "PreviewImage", "LoadImage"}


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "workflows").glob("*.ui.json")))
def test_example_layouts_keep_nodes_apart_once_previews_appear(name, playwright_browser, examples_server):
    context = playwright_browser.new_context(viewport=VIEWPORT)
    page = EditorPage(context.new_page(), examples_server.url + "/").open()
    try:
        page.js("(app, n) => app.openExample(n)", name)
        page.page.wait_for_function(f"() => document.querySelector('#workflow-name').textContent === "
                                    f"{json.dumps(name.removesuffix('.ui.json'))}")
        for node_id in page.js("(app) => app.editor.nodeIds()"):
            kind = node(page, node_id)["type"]
            if kind in SAMPLERS:
                page.js("(app, a) => app.editor.setPreview(a[0], a[1])", [node_id, PICTURE])
            elif kind in IMAGES:
                page.js("(app, a) => app.editor.setImages(a[0], [a[1]])", [node_id, PICTURE])
        page.page.wait_for_timeout(300)  # previews load as images first
        boxes = {}
        for node_id in page.js("(app) => app.editor.nodeIds()"):
            info = node(page, node_id)
            boxes[info["title"]] = (info["pos"][0], info["pos"][1] - 30, info["pos"][0] + info["size"][0],
                                    info["pos"][1] + info["size"][1])
        names = list(boxes)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes[a], boxes[b]
                assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1, f"{name}: {a} overlaps {b}"
        if name == "hires_fix.ui.json":
            page.screenshot("first-hour-hires-fix-previews")
    finally:
        context.close()
