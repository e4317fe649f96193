"""SaveImageWebsocket over a real server: each image arrives as a full-size PNG binary frame, as ComfyUI sends it
(type 1 with format 2 for plain clients, type 4 with image_type image/png for clients that take metadata)."""
from __future__ import annotations

import json
import struct
from io import BytesIO

from PIL import Image

from support.server import finished, messages_until, open_ws


async def test_save_image_websocket_sends_png_frames(client):
    modern, _ = await open_ws(client, "modern", metadata_previews=True)
    legacy, _ = await open_ws(client, "legacy", metadata_previews=False)
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 600, "height": 40, "batch_size": 2, "color": 0x102030}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    response = await client.post("/api/prompt", json={"prompt": prompt})
    assert response.status == 200, await response.text()
    pid = (await response.json())["prompt_id"]
    frames_legacy = [m for m in await messages_until(legacy, finished(pid)) if isinstance(m, bytes)]
    frames_modern = [m for m in await messages_until(modern, finished(pid)) if isinstance(m, bytes)]
    assert len(frames_legacy) == len(frames_modern) == 2
    kind, image_format = struct.unpack(">II", frames_legacy[0][:8])
    assert (kind, image_format) == (1, 2)
    with Image.open(BytesIO(frames_legacy[0][8:])) as png:
        assert png.format == "PNG" and png.size == (600, 40)  # full size: not shrunk to the preview size
        assert png.convert("RGB").getpixel((5, 5)) == (0x10, 0x20, 0x30)
    kind, meta_len = struct.unpack(">II", frames_modern[1][:8])
    meta = json.loads(frames_modern[1][8:8 + meta_len])
    assert kind == 4 and meta["image_type"] == "image/png" and meta["node_id"] == "2"
    assert frames_modern[1][8 + meta_len:] == frames_legacy[1][8:]
