"""The official ComfyUI frontend (`comfyui-frontend-package`, GPL-3.0, installed from PyPI, never vendored) served by
`nodegraph serve --frontend comfyui` in Debian's Chromium: a first visit logs no console error, its template browser
lists nodegraph's example workflows, and one of them runs to an image.

Skipped when the package is not installed (pip install comfyui-frontend-package, part of the `test` extra), and,
like the editor's browser tests, when Playwright or Chromium is missing."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.editor import VIEWPORT, free_port
from support.server import ServeProcess

ROOT = Path(__file__).resolve().parent.parent

if importlib.util.find_spec("comfyui_frontend_package") is None:
    pytest.skip("the official ComfyUI frontend is not installed: pip install comfyui-frontend-package (GPL-3.0, "
                "in the test extra)", allow_module_level=True)


class Served:
    def __init__(self, base: Path, process: subprocess.Popen, url: str):
        self.base, self.process, self.url = base, process, url

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path) as response:
            return json.load(response)


@pytest.fixture
def comfyui_server(tmp_path: Path) -> Iterator[Served]:
    """`python -m nodegraph serve --frontend comfyui` with a fresh data folder: the frontend's first visit."""
    port = free_port()
    process = ServeProcess(tmp_path, "--frontend", "comfyui", "--models-dir", str(tmp_path / "models"), "--device",
                           "cpu", port=port).proc
    try:
        yield Served(tmp_path, process, f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait()


def example_titles() -> list[str]:
    return sorted(p.name.removesuffix(".ui.json").replace("_", " ") for p in (ROOT / "workflows").glob("*.ui.json"))


def test_first_visit_has_no_console_errors_lists_the_examples_and_runs_one(
    playwright_browser, comfyui_server
):
    context = playwright_browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(comfyui_server.url + "/")
        # A first visit opens the template browser, with nodegraph's examples as its templates and thumbnails.
        page.get_by_text("nodegraph examples").wait_for(timeout=0)
        for title in example_titles():
            page.get_by_text(title, exact=True).first.wait_for(timeout=0)
        # The cards show our thumbnails (the frontend fetches them from /templates/NAME-1.webp into blob: URLs).
        from PIL import Image

        with Image.open(ROOT / "workflows" / "thumbnails" / "txt2img.webp") as thumbnail:
            width = thumbnail.width
        page.wait_for_function("w => [...document.images].filter(i => i.complete && i.naturalWidth === w).length >= 3",
                               arg=width, timeout=0)
        for name in (p.name.removesuffix(".ui.json") for p in (ROOT / "workflows").glob("*.ui.json")):
            with urllib.request.urlopen(f"{comfyui_server.url}/templates/{name}-1.webp") as thumbnail:
                assert thumbnail.headers["Content-Type"] == "image/webp" and thumbnail.read(12)[8:] == b"WEBP"

        page.get_by_text("txt2img", exact=True).first.click()
        page.wait_for_function("() => window.app?.graph?.nodes?.some(n => n.type === 'KSampler')", timeout=0)
        page.get_by_text("nodegraph examples").wait_for(state="hidden", timeout=0)
        page.get_by_role("button", name="Run").first.click()
        # The saved picture appears in the frontend, fetched from /view.
        page.wait_for_selector("img[src*='/api/view?filename=txt2img_']", timeout=0)
        history = comfyui_server.get("/api/history")
        (entry,) = history.values()
        assert entry["status"]["status_str"] == "success"
        (image,) = [i for output in entry["outputs"].values() for i in output.get("images", [])]
        assert (comfyui_server.base / "output" / image["filename"]).read_bytes().startswith(b"\x89PNG")
        prompt = entry["prompt"][2]
        assert any(node["class_type"] == "KSampler" for node in prompt.values())
        assert errors == [] and failed == [], (errors, failed)
    finally:
        context.close()
