"""The editor reads ComfyUI's workflow files the way ComfyUI's editor does.

The page is served by a real server, but its node library (`/api/object_info`) is swapped for the ComfyUI core
node records of tests/support/object_info.py, so the ComfyUI workflow files of tests/data/ui open with every node
known. For each file, the prompt the page would queue must equal what the server's own converter
(nodegraph.engine.uiformat.ui_to_api, which mirrors ComfyUI's graphToPrompt) makes of it.
"""
from __future__ import annotations

from typing import Any

import pytest

from nodegraph.engine.uiformat import ui_to_api
from support.editor import EditorPage
from support.object_info import NODE_INFO, load_ui, node_info
from support.workflows import FRONTEND_TXT2IMG as TXT2IMG

# Files whose every node the editor knows (PrimitiveNode and subgraphs are not supported by the editor yet).
COMPARABLE = ["txt2img_v04.json", "txt2img_v1.json", "absent_link.json", "bypass_chain.json", "loadimage.json",
              "muted.json", "notes.json", "reroute_chain.json", "widget_converted.json", "widgets_dict.json"]


@pytest.fixture
def comfy_editor(editor: EditorPage) -> EditorPage:
    editor.page.route("**/api/object_info", lambda route: route.fulfill(json=NODE_INFO))
    return editor.open({"nodes": [], "links": [], "version": 0.4})


def load(page: EditorPage, workflow: dict[str, Any]) -> dict[str, Any]:
    """Open `workflow` in the page; return the prompt it would queue."""
    page.js("(app, doc) => app.loadDocument(doc, 'fixture', {quiet: true})", workflow)
    return page.page.evaluate(
        "async () => (await import('./js/prompt.js')).graphToPrompt(window.nodegraph.editor.snapshot()).output")


@pytest.mark.parametrize("name", COMPARABLE)
def test_prompt_matches_the_server_converter(comfy_editor: EditorPage, name: str):
    workflow = load_ui(name)
    assert load(comfy_editor, workflow) == ui_to_api(workflow, node_info).prompt
    # The swapped-in library lists input images this server does not have; LoadImage's picture then 404s.
    allowed = ("status of 404",) if name == "loadimage.json" else ()
    assert comfy_editor.unexpected_errors(*allowed) == []


def test_default_comfyui_graph_gives_comfyuis_prompt_and_saves_back_unchanged(comfy_editor: EditorPage):
    workflow = load_ui("txt2img_v04.json")
    assert load(comfy_editor, workflow) == TXT2IMG
    saved = comfy_editor.js("(app) => app.editor.serializeWorkflow()")
    by_id = {n["id"]: n for n in saved["nodes"]}
    for original in workflow["nodes"]:
        mine = by_id[original["id"]]
        assert mine["type"] == original["type"]
        assert mine["widgets_values"] == original["widgets_values"]  # control_after_generate value included
        assert mine["pos"] == original["pos"]
        assert [i.get("link") for i in mine.get("inputs", []) if not i.get("widget")] == \
            [i.get("link") for i in original.get("inputs", []) if not i.get("widget")]
    assert sorted(saved["links"]) == sorted(workflow["links"])


def test_unknown_node_types_are_shown_and_queueing_is_refused(comfy_editor: EditorPage):
    comfy_editor.js("(app, doc) => app.loadDocument(doc, 'fixture', {quiet: true})", load_ui("unknown_node.json"))
    missing = [i for i in comfy_editor.js("(app) => app.editor.nodeIds()")
               if comfy_editor.js("(app, id) => app.editor.nodeInfo(id).title", i).endswith("(not installed)")]
    assert len(missing) == 1
    assert "FancyUpscaler" in comfy_editor.page.locator(".toast.error").first.inner_text()
    requests = []
    comfy_editor.page.on("request", lambda r: requests.append(r) if r.url.endswith("/api/prompt") else None)
    comfy_editor.page.click("#queue-button")
    comfy_editor.page.wait_for_selector(".toast.error:has-text('not installed')")
    assert requests == []
