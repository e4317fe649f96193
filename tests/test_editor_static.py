"""The editor's files and the server side it needs, without a browser: the vendored litegraph is the published
file, the code is plain ES modules that a browser loads as they are, `nodegraph serve` serves them, the example
workflow route is safe, and `--frontend comfyui` finds the official frontend or says how to install it.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodegraph.cli import main
from nodegraph.server import create_app
from nodegraph.server.frontends import FrontendMissing, comfyui_frontend_root
from support.server import make_config

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
VENDOR = WEB / "vendor" / "litegraph"
IMPORT = re.compile(r"""^\s*(?:import|export)\s[^'"]*?from\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']""", re.M)


def test_vendored_litegraph_is_the_published_0_17_2_with_licence():
    assert (VENDOR / "VERSION").read_text().strip() == "0.17.2"
    for line in (VENDOR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert {line.split()[1] for line in (VENDOR / "SHA256SUMS").read_text().splitlines()} == \
        {"litegraph.es.js", "litegraph.css"}
    licence = (VENDOR / "LICENSE").read_text()
    assert "Permission is hereby granted, free of charge" in licence  # MIT
    assert not IMPORT.findall((VENDOR / "litegraph.es.js").read_text())  # self-contained: nothing to bundle


def test_plain_es_modules_only_the_adapter_touches_litegraph():
    modules = sorted((WEB / "js").glob("*.js"))
    assert modules
    importers = []
    for module in modules:
        for groups in IMPORT.findall(module.read_text()):
            target = next(g for g in groups if g)
            assert target.startswith("./") or target.startswith("../"), f"{module.name}: bare import {target}"
            assert (module.parent / target).resolve().is_file(), f"{module.name}: {target} does not exist"
            if "vendor/litegraph" in target:
                importers.append(module.name)
    assert importers == ["graph_adapter.js"]


def test_index_html_loads_existing_files():
    html = (WEB / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"#:]+)"', html)
    assert "js/app.js" in references and "css/editor.css" in references
    for reference in references:
        assert (WEB / reference).is_file(), reference


async def test_serve_serves_the_editor_and_its_modules(tmp_path):
    async with TestClient(TestServer(create_app(make_config(tmp_path)))) as client:  # web_root: the project's web/
        index = await client.get("/")
        assert index.status == 200 and 'id="graph-canvas"' in await index.text()
        for path in ("/js/app.js", "/js/graph_adapter.js", "/vendor/litegraph/litegraph.es.js"):
            answer = await client.get(path)
            assert answer.status == 200, path
            assert "javascript" in answer.headers["Content-Type"], path
        css = await client.get("/css/editor.css")
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")


@pytest.fixture
async def examples_client(tmp_path):
    folder = tmp_path / "workflows"
    (folder / "more").mkdir(parents=True)
    (folder / "txt2img.json").write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    (folder / "txt2img.ui.json").write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    (folder / "more" / "upscale_two_pass.json").write_text(json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    (folder / "notes.txt").write_text("not a workflow")
    (folder / "broken.json").write_text("{not json")
    (tmp_path / "secret.json").write_text(json.dumps({"secret": True}))
    (folder / "escape.json").symlink_to(tmp_path / "secret.json")
    async with TestClient(TestServer(create_app(make_config(tmp_path, workflows_dir=folder)))) as client:
        yield client


async def test_example_workflows_are_listed_and_served(examples_client):
    listing = await (await examples_client.get("/api/nodegraph/workflows")).json()
    assert listing == {"workflows": [
        {"name": "broken.json", "title": "broken"},
        {"name": "more/upscale_two_pass.json", "title": "more/upscale two pass"},
        {"name": "txt2img.json", "title": "txt2img"},
        {"name": "txt2img.ui.json", "title": "txt2img"},  # the same workflow in the editor's format
    ]}
    assert (await examples_client.get("/nodegraph/workflows")).status == 200  # also without /api, like every route
    answer = await examples_client.get("/api/nodegraph/workflows/txt2img.json")
    assert answer.status == 200 and (await answer.json())["version"] == 0.4
    nested = await examples_client.get("/api/nodegraph/workflows/more%2Fupscale_two_pass.json")
    assert nested.status == 200 and "1" in await nested.json()


@pytest.mark.parametrize("name, status", [
    ("missing.json", 404),
    ("notes.txt", 400),
    ("..%2Fsecret.json", 400),
    ("%2Fetc%2Fpasswd.json", 400),
    ("escape.json", 400),  # a symlink pointing out of the folder
    ("broken.json", 500),
])
async def test_example_workflow_names_are_checked(examples_client, name, status):
    answer = await examples_client.get(f"/api/nodegraph/workflows/{name}")
    assert answer.status == status
    assert list(await answer.json()) == ["error"]  # a message, never the file behind the link


async def test_view_serves_input_images_of_the_example_folder(tmp_path):
    """The img2img example's LoadImage shows its picture: /view finds inputs where the nodes find them."""
    from nodegraph.engine import Folders

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "example.png").write_bytes((ROOT / "workflows" / "inputs" / "example.png").read_bytes())
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "mine.png").write_bytes(b"\x89PNG user")
    folders = Folders(models_dirs=[tmp_path / "models"], input_dir=tmp_path / "input", output_dir=tmp_path / "output",
                      temp_dir=tmp_path / "temp", extra_input_dirs=[bundled])
    async with TestClient(TestServer(create_app(make_config(tmp_path, folders=folders)))) as client:
        answer = await client.get("/api/view", params={"filename": "example.png", "type": "input"})
        assert answer.status == 200 and await answer.read() == (bundled / "example.png").read_bytes()
        assert (await client.get("/api/view", params={"filename": "mine.png", "type": "input"})).status == 200
        assert (await client.get("/api/view", params={"filename": "example.png", "type": "output"})).status == 404
        assert (await client.get("/api/view", params={"filename": "absent.png", "type": "input"})).status == 404


def test_frontend_comfyui_without_the_package_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nodegraph.server.frontends.COMFYUI_PACKAGE", "comfyui_frontend_package_absent")
    with pytest.raises(FrontendMissing):
        comfyui_frontend_root()
    code = main(["serve", "--frontend", "comfyui", "--port", "0", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "pip install comfyui-frontend-package" in capsys.readouterr().err


def test_frontend_comfyui_uses_the_installed_packages_static_folder(tmp_path, monkeypatch):
    package = tmp_path / "site" / "comfyui_frontend_package"
    (package / "static").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "static" / "index.html").write_text("<html>ComfyUI</html>")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert comfyui_frontend_root() == package / "static"
    code = main(["serve", "--frontend", "comfyui", "--web-root", str(tmp_path), "--data-dir", str(tmp_path)])
    assert code == 2  # one way to choose the editor at a time


def test_test_runs_write_screenshots_outside_the_repository(monkeypatch):
    """The browser tests' screenshots go to a temporary folder unless scripts/make_screenshots.py asks for
    docs/screenshots/: running the suite leaves the tracked pictures alone."""
    from support.editor import DOC_SCREENSHOTS, screenshot_dir

    monkeypatch.delenv("NODEGRAPH_SCREENSHOTS", raising=False)
    assert ROOT not in screenshot_dir().resolve().parents
    monkeypatch.setenv("NODEGRAPH_SCREENSHOTS", str(DOC_SCREENSHOTS))
    assert screenshot_dir() == DOC_SCREENSHOTS
    script = (ROOT / "scripts" / "make_screenshots.py").read_text()
    assert "NODEGRAPH_SCREENSHOTS" in script and '"docs" / "screenshots"' in script
