"""Fixtures for the browser tests of the editor (and the ComfyUI frontend): Debian's Chromium driven by Playwright against a real server.

The tests skip (with the install command in the reason) when Playwright or Chromium is missing. Never run
`playwright install`: its download site is unreachable here; the system Chromium is used instead.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import ROOT
from .server import ServeProcess, ServerThread, make_config
from .workflows import math_ui_workflow, pattern_api_prompt
DOC_SCREENSHOTS = ROOT / "docs" / "screenshots"  # redrawn by scripts/make_screenshots.py, never by a plain test run


def screenshot_dir() -> Path:
    """Where EditorPage.screenshot writes: $NODEGRAPH_SCREENSHOTS (scripts/make_screenshots.py points it at
    docs/screenshots), else a temporary folder, so the test suite leaves the tracked pictures alone."""
    chosen = os.environ.get("NODEGRAPH_SCREENSHOTS")
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / f"nodegraph-screenshots-{os.getpid()}"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 720}


def chromium_path() -> str | None:
    """NODEGRAPH_CHROMIUM, else Debian's /usr/bin/chromium, else chromium on PATH."""
    for candidate in (os.environ.get("NODEGRAPH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def playwright_browser() -> Iterator[Any]:
    """One headless Chromium for the module (skips when Playwright or Chromium is absent)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("editor browser tests need Playwright: pip install playwright (do not run `playwright install`)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("editor browser tests need Chromium: apt-get install -y chromium (or set NODEGRAPH_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def editor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The real server app (test node pack included) on a loopback socket, serving web/ and example workflows."""
    base = tmp_path_factory.mktemp("editor")
    examples = base / "workflows"
    examples.mkdir()
    (examples / "math.json").write_text(json.dumps(math_ui_workflow()))
    (examples / "pattern_api.json").write_text(json.dumps(pattern_api_prompt()))
    config = make_config(base, workflows_dir=examples, web_root=ROOT / "web")
    with ServerThread(config) as server:
        yield server


class EditorPage:
    """A page with the editor open, recording console errors and uncaught exceptions."""

    def __init__(self, page: Any, url: str):
        self.page = page
        self.url = url
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def open(self, workflow: dict[str, Any] | None = None) -> EditorPage:
        """Load the editor; with `workflow`, as if the user had left that graph open last time."""
        if workflow is not None:
            self.page.add_init_script(
                "if (!sessionStorage.getItem('ng-test-seeded')) {"
                f" localStorage.setItem('nodegraph.workflow', {json.dumps(json.dumps(workflow))});"
                " localStorage.setItem('nodegraph.workflowName', 'test');"
                " sessionStorage.setItem('ng-test-seeded', '1'); }")
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-ready='true']")
        self.page.wait_for_selector("#connection[data-state='online']")
        return self

    def js(self, expression: str, arg: Any = None) -> Any:
        """Evaluate `expression` (a function of (app, arg)) in the page."""
        return self.page.evaluate(f"([arg]) => ({expression})(window.nodegraph, arg)", [arg])

    def screen_point(self, node_id: int, what: dict[str, Any]) -> tuple[float, float]:
        x, y = self.js("(app, a) => app.editor.screenPoint(a.id, a.what)", {"id": node_id, "what": what})
        return x, y

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        """A real mouse drag on the canvas, in small steps."""
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        mouse.move(*end, steps=12)
        mouse.up()

    def screenshot(self, name: str) -> Path:
        folder = screenshot_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def unexpected_errors(self, *allowed: str) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in allowed)]


# Counts the light pixels (text: titles #c9ccd3, values #e2e4e9) of one band of the canvas as drawn now: a node's
# title bar after its dot, or the right half of a widget's row (where the value is), less the arrow.
_TEXT_PIXELS_JS = """(app, a) => {
  const editor = app.editor;
  const info = editor.nodeInfo(a.id);
  const scale = editor.canvas.ds.scale;
  const [cx, cy] = editor.screenPoint(a.id, a.widget ? { widget: a.widget } : {});
  const half = info.size[0] * scale / 2;
  const [x0, x1] = a.widget ? [cx, cx + half - 30 * scale] : [cx - half + 30 * scale, cx + half];
  const [y0, y1] = [cy - 6 * scale, cy + 6 * scale];
  const canvas = document.getElementById("graph-canvas");
  const rect = canvas.getBoundingClientRect();
  const ratio = canvas.width / rect.width;
  const pixels = canvas.getContext("2d").getImageData(Math.round((x0 - rect.left) * ratio),
    Math.round((y0 - rect.top) * ratio), Math.round((x1 - x0) * ratio), Math.round((y1 - y0) * ratio)).data;
  let light = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (Math.min(pixels[i], pixels[i + 1], pixels[i + 2]) > 150) light += 1;
  }
  return light;
}"""


def text_pixels(page: EditorPage, node_id: int, widget: str | None = None) -> int:
    """Light pixels in node `node_id`'s title bar (or in `widget`'s value): zero when litegraph drew no text."""
    return page.js(_TEXT_PIXELS_JS, {"id": node_id, "widget": widget})


@pytest.fixture
def editor(playwright_browser: Any, editor_server: ServerThread) -> Iterator[EditorPage]:
    """A fresh browser context (empty localStorage) at 1280x720 with the editor's URL."""
    context = playwright_browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    yield EditorPage(page, editor_server.url + "/")
    context.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(base: Path, port: int) -> subprocess.Popen:
    """`nodegraph serve` on `port` (built-in nodes, the editor from web/), once it announces that it listens."""
    return ServeProcess(base, "--web-root", str(ROOT / "web"), port=port).proc
