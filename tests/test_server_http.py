"""HTTP routes against docs/compat.md §1: prompt semantics, validation errors, queue, history, jobs,
files, uploads, user data, stats, and the JSON-only error surface."""
from __future__ import annotations

import asyncio
import io
import os
from typing import Any

import pytest
from aiohttp import FormData
from PIL import Image

from nodegraph.server.app import ROUTES
from support.workflows import image_workflow, math_workflow, sleep_workflow


async def post(client, prompt, **body):
    response = await client.post("/api/prompt", json={"prompt": prompt, **body})
    return response.status, await response.json()


async def wait_done(client, prompt_id: str) -> dict[str, Any]:
    """Poll the history until the prompt is recorded (what an HTTP-only client does)."""
    while True:
        entry = await (await client.get(f"/api/history/{prompt_id}")).json()
        if entry:
            return entry[prompt_id]
        await asyncio.sleep(0.01)


async def block_queue(client) -> str:
    """Start a long Sleep so that later prompts stay pending; returns its id (interrupt it when done)."""
    _, body = await post(client, sleep_workflow(60, value="blocker"))
    while (await (await client.get("/api/queue")).json())["queue_running"] == []:
        await asyncio.sleep(0.01)
    return body["prompt_id"]


# --- the route surface ---------------------------------------------------------------------------------------------

SIMPLE_GETS = ["/prompt", "/queue", "/history", "/object_info", "/object_info/IntMath", "/system_stats", "/features",
               "/extensions", "/embeddings", "/models", "/models/checkpoints", "/users", "/settings",
               "/settings/Comfy.Foo", "/jobs", "/v2/userdata", "/openapi.json"]


@pytest.mark.parametrize("path", SIMPLE_GETS)
async def test_every_route_answers_with_and_without_api_prefix(client, path):
    plain, prefixed = await client.get(path), await client.get("/api" + path)
    assert plain.status == prefixed.status == 200
    assert plain.headers["Content-Type"].startswith("application/json")
    assert plain.headers["X-Content-Type-Options"] == "nosniff"


async def test_openapi_describes_every_route(client):
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for method, path, _ in ROUTES:
        assert method.lower() in doc["paths"][path], f"{method} {path} missing from the OpenAPI document"
    assert set(doc["paths"]) == {path for _, path, _ in ROUTES}


async def test_unknown_routes_are_json_404_and_wrong_methods_405(client):
    for path in ("/api/internal/folder_paths", "/api/not_a_route", "/internal/logs", "/nothing/here"):
        response = await client.get(path)
        assert response.status == 404 and "error" in await response.json()
    response = await client.delete("/api/prompt")
    assert response.status == 405 and "POST" in response.headers["Allow"]
    response = await client.post("/api/not-a-route", data=b"x")
    assert response.status == 404 and (await response.json())["error"]


async def test_static_web_root_serves_index(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from nodegraph.server import create_app
    from support.server import make_config

    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<html>editor</html>")
    (web / "assets" / "app.js").write_text("console.log(1)")
    async with TestClient(TestServer(create_app(make_config(tmp_path, web_root=web)))) as c:
        index = await c.get("/")
        assert index.status == 200 and "editor" in await index.text()
        assert index.headers["Cache-Control"] == "no-cache"
        script = await c.get("/assets/app.js")
        assert script.status == 200 and "javascript" in script.headers["Content-Type"]
        assert (await c.get("/../secret")).status == 404
        assert (await c.get("/assets/%2e%2e/%2e%2e/data/nodegraph.sqlite3")).status == 404


# --- POST /prompt ----------------------------------------------------------------------------------------------------


async def test_post_prompt_shape_and_client_prompt_id(client):
    status, body = await post(client, math_workflow(), prompt_id="my-id-1")
    assert status == 200
    assert body == {"prompt_id": "my-id-1", "number": body["number"], "node_errors": {}}
    entry = await wait_done(client, "my-id-1")
    assert entry["outputs"] == {"4": {"text": ["5"]}}
    assert entry["prompt"][1] == "my-id-1" and entry["prompt"][4] == ["4"]
    assert entry["meta"]["4"] == {"node_id": "4", "display_node": "4", "parent_node": None, "real_node_id": "4"}
    status, body = await post(client, math_workflow(), prompt_id="my-id-1")
    assert status == 400 and body["error"]["message"] == "Duplicate prompt_id"


async def test_front_and_explicit_number_order_the_queue(client):
    blocker = await block_queue(client)
    _, a = await post(client, math_workflow(1, 0))
    _, b = await post(client, math_workflow(2, 0), front=True)
    _, c = await post(client, math_workflow(3, 0), number=-1000.5)
    assert c["number"] == -1000.5 and isinstance(a["number"], int) and b["number"] < 0
    queue = await (await client.get("/api/queue")).json()
    assert [item[1] for item in queue["queue_pending"]] == [c["prompt_id"], b["prompt_id"], a["prompt_id"]]
    assert all(len(item) == 5 for item in queue["queue_pending"] + queue["queue_running"])
    assert queue["queue_running"][0][1] == blocker
    assert (await (await client.get("/api/prompt")).json()) == {"exec_info": {"queue_remaining": 4}}
    await client.post("/api/interrupt")
    for pid in (blocker, c["prompt_id"], b["prompt_id"], a["prompt_id"]):
        await wait_done(client, pid)
    history = await (await client.get("/api/history")).json()
    assert list(history) == [blocker, c["prompt_id"], b["prompt_id"], a["prompt_id"]]


def _error_types(body: dict[str, Any]) -> dict[str, list[str]]:
    return {nid: [e["type"] for e in entry["errors"]] for nid, entry in body["node_errors"].items()}


VALIDATION_CASES = {
    "required_input_missing": {"1": {"class_type": "ShowText", "inputs": {}}},
    "bad_linked_input": {"1": {"class_type": "ShowText", "inputs": {"value": ["99", 0]}}},
    "return_type_mismatch": {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}},
        "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "op": "add", "b": 1}},
        "3": {"class_type": "ShowText", "inputs": {"value": ["2", 0]}}},
    "invalid_input_type": {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": "twelve"}},
        "2": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}}},
    "value_smaller_than_min": {
        "1": {"class_type": "Sleep", "inputs": {"value": "x", "seconds": -1}},
        "2": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}}},
    "value_bigger_than_max": {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 2**70}},
        "2": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}}},
    "value_not_in_list": {
        "1": {"class_type": "IntMath", "inputs": {"a": 1, "op": "xor", "b": 2}},
        "2": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}}},
    "custom_validation_failed": {
        "1": {"class_type": "StringFormat", "inputs": {"template": "{zzz}"}},
        "2": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}}},
    "dependency_cycle": {
        "1": {"class_type": "ToString", "inputs": {"value": ["2", 0]}},
        "2": {"class_type": "ToString", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "ShowText", "inputs": {"value": ["2", 0]}}},
}


@pytest.mark.parametrize("kind", sorted(VALIDATION_CASES))
async def test_validation_errors(client, kind):
    status, body = await post(client, VALIDATION_CASES[kind])
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    found = _error_types(body)
    assert any(kind in kinds for kinds in found.values()), found
    failing = next(entry for entry in body["node_errors"].values() if any(e["type"] == kind for e in entry["errors"]))
    assert failing["dependent_outputs"] and failing["class_type"]
    if kind not in ("dependency_cycle",):
        assert "input_name" in next(e for e in failing["errors"] if e["type"] == kind)["extra_info"]


async def test_top_level_prompt_errors(client):
    status, body = await post(client, {"1": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "Mine"}}})
    assert status == 400 and body["node_errors"] == {}
    assert body["error"]["type"] == "missing_node_type" and "Mine" in body["error"]["message"]
    assert body["error"]["extra_info"]["class_type"] == "NoSuchNode"
    status, body = await post(client, {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}})
    assert status == 400 and body["error"]["type"] == "prompt_no_outputs"
    response = await client.post("/api/prompt", json={"client_id": "x"})
    assert response.status == 400
    assert await response.json() == {"error": {"type": "no_prompt", "message": "No prompt provided",
                                               "details": "No prompt provided", "extra_info": {}},
                                     "node_errors": {}}


async def test_a_workflow_sent_without_the_prompt_wrapper_is_told_to_wrap_it(client):
    response = await client.post("/api/prompt", json=math_workflow())
    body = await response.json()
    assert response.status == 400 and body["error"]["type"] == "no_prompt"
    assert body["error"]["message"] == "No prompt provided"  # ComfyUI's message; the details say what to do
    assert 'wrap it as {"prompt": <the workflow>' in body["error"]["details"]
    response = await client.post("/api/prompt", json={"nodes": [], "links": [], "version": 0.4})
    details = (await response.json())["error"]["details"]
    assert response.status == 400 and "UI-format workflow" in details and "nodegraph convert" in details


async def test_two_outputs_one_invalid_runs_the_valid_one(client):
    prompt = {**math_workflow(), "9": {"class_type": "ShowText", "inputs": {}}}
    status, body = await post(client, prompt)
    assert status == 200 and list(body["node_errors"]) == ["9"]
    entry = await wait_done(client, body["prompt_id"])
    assert list(entry["outputs"]) == ["4"] and entry["prompt"][4] == ["4"]


async def test_partial_execution_targets(client):
    prompt = {**math_workflow(), "5": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}}}
    status, body = await post(client, prompt, partial_execution_targets=["5"])
    assert status == 200
    entry = await wait_done(client, body["prompt_id"])
    assert entry["outputs"] == {"5": {"text": ["2"]}} and sorted(entry["timings"]) == ["1", "5"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"NaN", b'{"prompt": {}, "number": "lots"}',
                                 b'{"prompt": {}, "number": 1e999}', b'{"prompt": {}, "extra_data": 3}',
                                 b'{"prompt": {}, "partial_execution_targets": "1"}',
                                 b'{"prompt": {}, "prompt_id": {"a": 1}}', b'{"prompt": 5}', b"[" * 100000])
async def test_malformed_bodies_are_precise_400s(client, raw):
    response = await client.post("/api/prompt", data=raw)
    assert response.status == 400
    body = await response.json()
    assert body["error"]["type"] and body["error"]["details"]
    assert (await client.get("/api/queue")).status == 200


async def test_sensitive_extra_data_never_stored_or_echoed(client):
    blocker = await block_queue(client)
    extra = {"auth_token_comfy_org": "SECRET-1", "api_key_comfy_org": "SECRET-2", "extra_pnginfo": {"workflow": {
        "id": "wf-1"}}}
    _, body = await post(client, math_workflow(), extra_data=extra, client_id="c1")
    pid = body["prompt_id"]
    queue_text = await (await client.get("/api/queue")).text()
    jobs_text = await (await client.get("/api/jobs")).text()
    await client.post("/api/interrupt")
    entry = await wait_done(client, pid)
    assert entry["prompt"][3]["client_id"] == "c1" and isinstance(entry["prompt"][3]["create_time"], int)
    texts = [queue_text, jobs_text, await (await client.get("/api/history")).text(),
             await (await client.get(f"/api/jobs/{pid}")).text()]
    assert not any("SECRET" in text for text in texts)
    assert blocker


# --- queue and history -----------------------------------------------------------------------------------------------


async def test_queue_delete_and_clear(client):
    blocker = await block_queue(client)
    ids = [(await post(client, math_workflow(i, 0)))[1]["prompt_id"] for i in range(4)]
    assert (await client.post("/api/queue", json={"delete": [ids[0], "unknown"]})).status == 200
    pending = [i[1] for i in (await (await client.get("/api/queue")).json())["queue_pending"]]
    assert pending == ids[1:]
    assert (await client.post("/api/queue", json={"clear": True})).status == 200
    queue = await (await client.get("/api/queue")).json()
    assert queue["queue_pending"] == [] and queue["queue_running"][0][1] == blocker
    assert (await client.post("/api/queue", json={"delete": "nope"})).status == 400
    await client.post("/api/interrupt")
    await wait_done(client, blocker)
    assert await (await client.get(f"/api/history/{ids[0]}")).json() == {}


async def test_history_paging_delete_clear(client):
    ids = []
    for i in range(5):
        _, body = await post(client, math_workflow(i, 100))
        ids.append(body["prompt_id"])
    for pid in ids:
        await wait_done(client, pid)
    assert list(await (await client.get("/api/history")).json()) == ids
    assert list(await (await client.get("/api/history?max_items=2")).json()) == ids[-2:]
    assert list(await (await client.get("/api/history?max_items=2&offset=1")).json()) == ids[1:3]
    assert (await client.get("/api/history?max_items=-3")).status == 400
    assert (await client.get("/api/history?offset=abc")).status == 400
    await client.post("/api/history", json={"delete": [ids[0]]})
    assert list(await (await client.get("/api/history")).json()) == ids[1:]
    await client.post("/api/history", json={"clear": True})
    assert await (await client.get("/api/history")).json() == {}


async def test_history_is_bounded(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from nodegraph.server import create_app
    from support.server import make_config

    async with TestClient(TestServer(create_app(make_config(tmp_path, max_history=3)))) as c:
        ids = []
        for i in range(5):
            _, body = await post(c, math_workflow(i, 1))
            ids.append(body["prompt_id"])
        for pid in ids[-1:]:
            await wait_done(c, pid)
        assert list(await (await c.get("/api/history")).json()) == ids[-3:]


# --- jobs --------------------------------------------------------------------------------------------------------


async def test_jobs_shapes_filters_sorting_and_paging(client):
    done = []
    for i in range(3):
        _, body = await post(client, image_workflow(steps=0, prefix=f"job{i}"), extra_data={
            "extra_pnginfo": {"workflow": {"id": "wf-a" if i < 2 else "wf-b"}}})
        done.append(body["prompt_id"])
        await wait_done(client, body["prompt_id"])
    blocker = await block_queue(client)
    _, pending = await post(client, math_workflow())

    listing = await (await client.get("/api/jobs?limit=200&offset=0")).json()
    assert listing["pagination"] == {"offset": 0, "limit": 200, "total": 5, "has_more": False}
    assert [j["id"] for j in listing["jobs"]] == [pending["prompt_id"], blocker, *reversed(done)]
    for job in listing["jobs"]:
        assert isinstance(job["id"], str) and isinstance(job["create_time"], int) and job["status"]
    completed = listing["jobs"][2]
    assert completed["status"] == "completed" and completed["outputs_count"] == 1
    assert completed["preview_output"]["nodeId"] == "2" and completed["preview_output"]["mediaType"] == "images"
    assert completed["workflow_id"] == "wf-b"
    assert completed["execution_end_time"] >= completed["execution_start_time"]

    active = await (await client.get("/api/jobs?status=in_progress,pending&limit=200&offset=0")).json()
    assert [j["status"] for j in active["jobs"]] == ["pending", "in_progress"]
    wf = await (await client.get("/api/jobs?status=completed&workflow_id=wf-a&sort_order=asc&limit=10")).json()
    assert [j["id"] for j in wf["jobs"]] == done[:2]
    page = await (await client.get("/api/jobs?limit=2&offset=1")).json()
    assert page["pagination"] == {"offset": 1, "limit": 2, "total": 5, "has_more": True} and len(page["jobs"]) == 2
    by_duration = await (await client.get("/api/jobs?sort_by=execution_duration&status=completed")).json()
    durations = [j["execution_end_time"] - j["execution_start_time"] for j in by_duration["jobs"]]
    assert durations == sorted(durations, reverse=True)

    for bad in ("status=done", "sort_by=name", "sort_order=up", "limit=0", "limit=x", "offset=-1"):
        response = await client.get(f"/api/jobs?{bad}")
        assert response.status == 400 and "error" in await response.json(), bad

    detail = await (await client.get(f"/api/jobs/{done[0]}")).json()
    assert detail["outputs"]["2"]["images"][0]["filename"].startswith("job0_")
    assert detail["execution_status"]["status_str"] == "success"
    assert detail["workflow"]["prompt"]["1"]["class_type"] == "TestPattern"
    assert sorted(detail["timings"]) == ["1", "2"]
    missing = await client.get("/api/jobs/nope")
    assert missing.status == 404 and await missing.json() == {"error": "Job not found"}

    cancel = await client.post(f"/api/jobs/{pending['prompt_id']}/cancel")
    assert await cancel.json() == {"id": pending["prompt_id"], "result": "cancelled"}
    assert (await client.post(f"/api/jobs/{done[0]}/cancel")).status == 409
    assert (await client.post("/api/jobs/nope/cancel")).status == 404
    many = await client.post("/api/jobs/cancel", json={"job_ids": [blocker, "nope"]})
    assert await many.json() == {"cancelled": [], "interrupted": [blocker], "not_cancelled": ["nope"]}
    assert (await client.post("/api/jobs/cancel", json={})).status == 400
    await wait_done(client, blocker)
    assert (await (await client.get(f"/api/jobs/{blocker}")).json())["status"] == "cancelled"


# --- files -------------------------------------------------------------------------------------------------------


def _png(color=(255, 0, 0, 128), size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_view_formats_and_refusals(client, tmp_path):
    out = tmp_path / "output"
    (out / "sub").mkdir(parents=True, exist_ok=True)
    (out / "sub" / "a.png").write_bytes(_png())
    (out / "page.html").write_text("<script>alert(1)</script>")
    (tmp_path / "secret.png").write_bytes(_png())
    os.symlink(tmp_path / "secret.png", out / "link.png")

    raw = await client.get("/api/view", params={"filename": "a.png", "subfolder": "sub"})
    assert raw.status == 200 and raw.headers["Content-Type"] == "image/png"
    assert raw.headers["Content-Disposition"] == 'filename="a.png"'
    webp = await client.get("/api/view", params={"filename": "a.png", "subfolder": "sub", "preview": "webp;90"})
    assert webp.headers["Content-Type"] == "image/webp"
    jpeg = await client.get("/api/view", params={"filename": "a.png", "subfolder": "sub", "preview": "jpeg;50"})
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    alpha = await client.get("/api/view", params={"filename": "a.png", "subfolder": "sub", "channel": "a"})
    with Image.open(io.BytesIO(await alpha.read())) as img:
        assert img.mode == "RGBA" and img.getpixel((0, 0)) == (0, 0, 0, 128)
    rgb = await client.get("/api/view", params={"filename": "a.png", "subfolder": "sub", "channel": "rgb"})
    with Image.open(io.BytesIO(await rgb.read())) as img:
        assert img.mode == "RGB"
    annotated = await client.get("/api/view", params={"filename": "a.png [output]", "subfolder": "sub",
                                                      "type": "input"})
    assert annotated.status == 200
    html = await client.get("/api/view", params={"filename": "page.html"})
    assert html.status == 200 and html.headers["Content-Type"] == "application/octet-stream"

    cases = {
        400: [{"filename": "../secret.png"}, {"filename": "/etc/passwd"}, {"filename": "a.png", "type": "models"},
              {}, {"filename": "a.png", "subfolder": "sub", "channel": "q"}],
        403: [{"filename": "secret.png", "subfolder": ".."}, {"filename": "link.png"},
              {"filename": "passwd", "subfolder": "/etc"}],
        404: [{"filename": "nope.png"}, {"filename": "a.png"}],
    }
    for status, params in cases.items():
        for query in params:
            response = await client.get("/api/view", params=query)
            assert response.status == status, (query, response.status)
            assert "error" in await response.json()


async def _upload(client, data: bytes, name: str = "x.png", **fields: str):
    form = FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    response = await client.post("/api/upload/image", data=form)
    return response.status, await response.json()


async def test_upload_collisions_dedupe_overwrite_and_escapes(client, tmp_path):
    red, blue = _png((255, 0, 0, 255)), _png((0, 0, 255, 255))
    assert await _upload(client, red) == (200, {"name": "x.png", "subfolder": "", "type": "input"})
    assert await _upload(client, red) == (200, {"name": "x.png", "subfolder": "", "type": "input"})  # same bytes
    assert (await _upload(client, blue))[1]["name"] == "x (1).png"
    assert (await _upload(client, _png((0, 255, 0, 255))))[1]["name"] == "x (2).png"
    assert (await _upload(client, blue))[1]["name"] == "x (1).png"
    assert (await _upload(client, blue, overwrite="true"))[1]["name"] == "x.png"
    assert (tmp_path / "input" / "x.png").read_bytes() == blue
    status, body = await _upload(client, red, subfolder="masks/a", type="temp")
    assert (status, body) == (200, {"name": "x.png", "subfolder": "masks/a", "type": "temp"})
    assert (tmp_path / "temp" / "masks" / "a" / "x.png").is_file()
    for bad in ({"subfolder": "../.."}, {"subfolder": "/tmp"}, {"type": "elsewhere"}):
        assert (await _upload(client, red, **bad))[0] == 400, bad
    assert (await _upload(client, red, name="../evil.png"))[0] == 400
    assert (await client.post("/api/upload/image", data=FormData({"type": "input"}))).status == 400
    assert not any(p.name.startswith(".upload-") for p in (tmp_path / "input").iterdir())


async def test_upload_mask_applies_alpha_and_keeps_text_chunks(client, tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", '{"a": 1}')
    original = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(original, format="PNG", pnginfo=info)
    (tmp_path / "input").mkdir(exist_ok=True)
    (tmp_path / "input" / "orig.png").write_bytes(original.getvalue())
    form = FormData()
    form.add_field("image", _png((0, 0, 0, 77), size=(4, 4)), filename="orig_mask.png", content_type="image/png")
    form.add_field("original_ref", '{"filename": "orig.png", "subfolder": "", "type": "input"}')
    response = await client.post("/api/upload/mask", data=form)
    assert response.status == 200 and (await response.json())["name"] == "orig_mask.png"
    with Image.open(tmp_path / "input" / "orig_mask.png") as img:
        assert img.getpixel((1, 1)) == (10, 20, 30, 77) and img.text["workflow"] == '{"a": 1}'
    form = FormData()
    form.add_field("image", _png(), filename="m.png", content_type="image/png")
    form.add_field("original_ref", '{"filename": "../../x.png"}')
    assert (await client.post("/api/upload/mask", data=form)).status == 400


async def test_upload_size_limit(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from nodegraph.server import create_app
    from support.server import make_config

    async with TestClient(TestServer(create_app(make_config(tmp_path, max_upload_size_mb=0.01)))) as c:
        status, body = await _upload(c, b"\0" * 20000)
        assert status == 413 and "error" in body
        assert (await c.get("/api/features")).status == 200


async def test_models_and_embeddings(client, tmp_path):
    (tmp_path / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "sub" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "embeddings").mkdir(parents=True)
    (tmp_path / "models" / "embeddings" / "EasyNeg.pt").write_bytes(b"x")
    assert "checkpoints" in await (await client.get("/api/models")).json()
    assert await (await client.get("/api/models/checkpoints")).json() == ["sub/a.safetensors"]
    assert (await client.get("/api/models/secrets")).status == 404
    assert await (await client.get("/api/embeddings")).json() == ["EasyNeg"]
    assert (await client.get("/api/view_metadata/checkpoints?filename=sub/a.safetensors")).status == 404


# --- users, settings, userdata ---------------------------------------------------------------------------------------


async def test_users_and_settings_round_trip(client):
    assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": True}
    assert await (await client.get("/api/settings")).json() == {}
    # The editor posts a raw JSON value without a Content-Type.
    response = await client.post("/api/settings/Comfy.Theme", data=b'"dark"', headers={"Content-Type": ""})
    assert response.status == 200
    await client.post("/api/settings", json={"A.b": 3})
    assert await (await client.get("/api/settings")).json() == {"Comfy.Theme": "dark", "A.b": 3}
    assert await (await client.get("/api/settings/Comfy.Theme")).json() == "dark"
    assert await (await client.get("/api/settings/unset")).json() is None
    assert (await client.post("/api/settings", json=[1])).status == 400
    assert (await client.post("/api/settings/x", data=b"{bad")).status == 400


async def test_userdata_files(client, tmp_path):
    url = "/api/userdata/workflows%2Fsub%2Fa.json"
    assert (await client.get("/api/userdata?dir=notes")).status == 404  # (workflows/ lists as [] when absent)
    saved = await client.post(url, data=b'{"nodes": []}')
    assert saved.status == 200 and await saved.json() == "workflows/sub/a.json"
    assert (tmp_path / "data" / "user" / "default" / "workflows" / "sub" / "a.json").is_file()
    assert (await client.post(url + "?overwrite=false", data=b"{}")).status == 409
    got = await client.get(url)
    assert await got.read() == b'{"nodes": []}' and got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Disposition"].startswith("attachment")
    listing = await (await client.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")).json()
    assert [f["path"] for f in listing] == ["sub/a.json"] and isinstance(listing[0]["modified"], int)
    assert await (await client.get("/api/userdata?dir=workflows&recurse=true&split=true")).json() == [
        ["sub/a.json", "sub", "a.json"]]
    assert await (await client.get("/api/userdata?dir=workflows")).json() == []
    v2 = await (await client.get("/api/v2/userdata?path=workflows")).json()
    assert v2 == [{"name": "sub", "path": "workflows/sub", "type": "directory", "modified": v2[0]["modified"]}]
    moved = await client.post(f"{url}/move/workflows%2Fb.json?full_info=true")
    assert (await moved.json())["path"] == "workflows/b.json"
    assert (await client.get(url)).status == 404
    assert (await client.delete("/api/userdata/workflows%2Fb.json")).status == 204
    assert (await client.delete("/api/userdata/workflows%2Fb.json")).status == 404
    assert (await client.get("/api/userdata")).status == 400
    for escape in ("/api/userdata/..%2F..%2Fnodegraph.sqlite3", "/api/userdata?dir=..%2F.."):
        assert (await client.get(escape)).status == 403, escape
    assert (await client.post("/api/userdata/..%2Fescape.json", data=b"x")).status == 403


# --- system ------------------------------------------------------------------------------------------------------


async def test_system_stats_features_extensions_object_info(client):
    stats = await (await client.get("/api/system_stats")).json()
    for key in ("argv", "comfyui_version", "embedded_python", "os", "python_version", "pytorch_version",
                "ram_free", "ram_total"):
        assert key in stats["system"]
    assert stats["devices"] and {"name", "type"} <= set(stats["devices"][0])
    assert {"entries", "bytes", "hits"} <= set(stats["nodegraph"]["output_cache"])
    assert isinstance(stats["nodegraph"]["resources"], dict)
    assert (await (await client.get("/api/features")).json())["supports_preview_metadata"] is True
    assert await (await client.get("/api/extensions")).json() == []
    info = await (await client.get("/api/object_info")).json()
    for record in info.values():
        assert {"name", "display_name", "description", "category", "output_node", "python_module", "input",
                "input_order", "output", "output_name", "output_is_list"} <= set(record)
    assert info["SaveTestImage"]["output_node"] is True
    assert list(await (await client.get("/api/object_info/IntMath")).json()) == ["IntMath"]
    assert await (await client.get("/api/object_info/Nope")).json() == {}


async def test_free_clears_the_output_cache(client):
    _, body = await post(client, math_workflow(31, 1))
    await wait_done(client, body["prompt_id"])
    stats = await (await client.get("/api/system_stats")).json()
    assert stats["nodegraph"]["output_cache"]["entries"] > 0
    assert (await client.post("/api/free", json={"unload_models": True, "free_memory": True})).status == 200
    while (await (await client.get("/api/system_stats")).json())["nodegraph"]["output_cache"]["entries"]:
        await asyncio.sleep(0.01)
    assert (await client.post("/api/free", data=b"[]")).status == 400


async def test_cache_none_recomputes_everything(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from nodegraph.server import create_app
    from support.server import make_config

    async with TestClient(TestServer(create_app(make_config(tmp_path, cache="none")))) as c:
        for _ in range(2):
            _, body = await post(c, math_workflow())
            entry = await wait_done(c, body["prompt_id"])
            assert sorted(entry["timings"]) == ["1", "2", "3", "4"]
            assert entry["status"]["messages"][1][1]["nodes"] == []


async def test_non_json_ui_output_is_recorded_as_text(client):
    _, body = await post(client, {"1": {"class_type": "OddOutput", "inputs": {"value": 3}}})
    entry = await wait_done(client, body["prompt_id"])
    assert entry["status"]["status_str"] == "success" and entry["outputs"] == {"1": {"values": ["(3+2j)"]}}
