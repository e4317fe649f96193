"""The server driven like a ComfyUI API script, with the independent `websocket-client` library and urllib."""
from __future__ import annotations

import json
import urllib.parse
import uuid
from pathlib import Path

import pytest
import websocket

from support.server import ServerThread, http, make_config
from support.workflows import image_workflow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with ServerThread(make_config(tmp_path_factory.mktemp("client"))) as running:
        yield running


def test_api_script_queue_follow_download(server):
    client_id = str(uuid.uuid4())
    ws = websocket.create_connection(f"{server.url.replace('http', 'ws')}/ws?clientId={client_id}")
    try:
        status, body, _ = http("POST", f"{server.url}/prompt",
                               {"prompt": image_workflow(steps=2, shade=200), "client_id": client_id,
                                "extra_data": {"preview_method": "auto"}})
        assert status == 200
        prompt_id = json.loads(body)["prompt_id"]
        previews, seen = 0, []
        while True:
            frame = ws.recv()
            if isinstance(frame, bytes):
                previews += 1
                continue
            message = json.loads(frame)
            seen.append(message["type"])
            if message["type"] == "executing":
                data = message["data"]
                if data["node"] is None and data["prompt_id"] == prompt_id:
                    break
        assert previews == 2  # no feature_flags sent: legacy type-1 frames
        assert seen[0] == "status" and "executed" in seen and "execution_success" in seen
    finally:
        ws.close()

    status, body, _ = http("GET", f"{server.url}/history/{prompt_id}")
    history = json.loads(body)[prompt_id]
    images = [image for output in history["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 1
    query = urllib.parse.urlencode({"filename": images[0]["filename"], "subfolder": images[0]["subfolder"],
                                    "type": images[0]["type"]})
    status, data, headers = http("GET", f"{server.url}/view?{query}")
    assert status == 200 and data.startswith(b"\x89PNG") and headers["Content-Type"] == "image/png"
    saved = Path(server.config.folders.output_dir) / images[0]["filename"]
    assert saved.read_bytes() == data


def test_the_documented_client_example_works(server, tmp_path):
    """docs/api.md's Python client, run as written against the server."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {"__name__": "docs_example"}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    namespace["SERVER"] = server.url
    entry, files = namespace["run"](image_workflow(steps=1, shade=30, prefix="doc"), out_dir=str(tmp_path))
    assert entry["status"]["status_str"] == "success"
    assert len(files) == 1 and files[0].read_bytes().startswith(b"\x89PNG")
