"""The routes the official ComfyUI frontend reads besides the core API, in ComfyUI's shapes: the template index and
files (nodegraph's examples), custom-node templates, translations, global subgraphs, the model library, and the
userdata a first visit reads."""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image


ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name.removesuffix(".ui.json") for p in (ROOT / "workflows").glob("*.ui.json"))


async def test_template_index_lists_every_example_with_its_workflow_and_thumbnail(client):
    response = await client.get("/templates/index.json")
    assert response.status == 200 and response.content_type == "application/json"
    (category,) = await response.json()
    assert category["moduleName"] == "default" and category["type"] == "image"
    assert [t["name"] for t in category["templates"]] == EXAMPLES
    txt2img = next(t for t in category["templates"] if t["name"] == "txt2img")
    assert txt2img["mediaType"] == "image" and txt2img["mediaSubtype"] == "webp"
    assert "a red circle" in txt2img["description"]  # the example's positive prompt
    for name in EXAMPLES:
        workflow = await (await client.get(f"/templates/{name}.json")).json()
        assert workflow == json.loads((ROOT / "workflows" / f"{name}.ui.json").read_text())
        thumbnail = await client.get(f"/templates/{name}-1.webp")
        assert thumbnail.status == 200 and thumbnail.content_type == "image/webp"
        assert (await thumbnail.read())[8:12] == b"WEBP"
    assert await (await client.get("/templates/index_logo.json")).json() == {}
    for missing in ("nope.json", "nope-1.webp", "txt2img.ui.json", "..%2Fpyproject.toml"):
        assert (await client.get(f"/templates/{missing}")).status == 404


async def test_custom_node_templates_translations_and_subgraphs_are_empty(client):
    for path in ("/api/workflow_templates", "/api/i18n", "/api/global_subgraphs"):
        response = await client.get(path)
        assert response.status == 200 and await response.json() == {}, path
    assert (await client.get("/api/global_subgraphs/abc")).status == 404


async def test_model_library_lists_folders_and_files(client, tmp_path):
    checkpoints = tmp_path / "models" / "checkpoints"
    (checkpoints / "sub").mkdir(parents=True)
    (checkpoints / "sub" / "a.safetensors").write_bytes(b"12345")
    Image.new("RGB", (4, 4), "red").save(checkpoints / "sub" / "a.png")
    folders = await (await client.get("/api/experiment/models")).json()
    names = [f["name"] for f in folders]
    assert {"checkpoints", "loras", "vae", "controlnet", "vae_approx"} <= set(names)
    entry = next(f for f in folders if f["name"] == "checkpoints")
    assert entry["folders"] == [str(checkpoints.absolute())]
    files = await (await client.get("/api/experiment/models/checkpoints")).json()
    assert [(f["name"], f["pathIndex"], f["size"]) for f in files] == [("sub/a.safetensors", 0, 5)]
    assert isinstance(files[0]["modified"], float) and isinstance(files[0]["created"], float)
    assert await (await client.get("/api/experiment/models/loras")).json() == []
    assert (await client.get("/api/experiment/models/secrets")).status == 404
    for name in ("sub/a.safetensors", "sub/a.webp"):  # the frontend asks with the extension swapped for .webp
        preview = await client.get(f"/api/experiment/models/preview/checkpoints/0/{name}")
        assert preview.status == 200 and preview.content_type == "image/webp"
        with Image.open(io.BytesIO(await preview.read())) as picture:
            red, green, blue = picture.convert("RGB").getpixel((0, 0))
            assert picture.format == "WEBP" and red > 200 and green < 60 and blue < 60  # the red a.png
    for bad in ("checkpoints/0/sub/none.safetensors", "checkpoints/7/sub/a.safetensors",
                "checkpoints/0/..%2F..%2Fsecret.safetensors"):
        assert (await client.get(f"/api/experiment/models/preview/{bad}")).status == 404, bad


async def test_first_visit_userdata_reads_answer_empty_until_the_user_saves(client):
    for folder in ("workflows", "subgraphs"):
        listing = await client.get(f"/api/userdata?dir={folder}&recurse=true&split=false&full_info=true")
        assert listing.status == 200 and await listing.json() == []
    assert (await client.get("/api/userdata?dir=other")).status == 404  # other folders answer as before
    templates = await client.get("/api/userdata/comfy.templates.json")
    assert templates.status == 200 and await templates.json() == []
    for path in ("/user.css", "/api/userdata/user.css"):
        css = await client.get(path)
        assert css.status == 200 and css.content_type == "text/css" and await css.text() == ""

    saved = await client.post("/api/userdata/workflows%2Fmine.json", data=b'{"nodes": [], "links": []}')
    assert saved.status == 200
    listing = await (await client.get("/api/userdata?dir=workflows&recurse=true&full_info=true")).json()
    assert [item["path"] for item in listing] == ["mine.json"]
    await client.post("/api/userdata/comfy.templates.json", data=b'[{"name": "t"}]')
    assert await (await client.get("/api/userdata/comfy.templates.json")).read() == b'[{"name": "t"}]'
    await client.post("/api/userdata/user.css", data=b"body { color: red }")
    css = await client.get("/user.css")
    assert css.content_type == "text/css" and await css.text() == "body { color: red }"


async def test_system_stats_announce_no_api_nodes(client):
    stats = await (await client.get("/api/system_stats")).json()
    assert "--disable-api-nodes" in stats["system"]["argv"]
