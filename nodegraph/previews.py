"""Preview images for the websocket: scaled JPEGs, and ComfyUI's binary frame layouts (docs/compat.md §2.4).

Used by the server's prompt worker and hub, and by Ray workers (nodegraph/distributed/actor.py), which encode their
previews before sending them: so it lives below both."""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Any

PREVIEW_IMAGE = 1  # uint32 1 | uint32 format (1 = JPEG, 2 = PNG) | image bytes
PREVIEW_IMAGE_WITH_METADATA = 4  # uint32 4 | uint32 meta length | meta JSON | image bytes
JPEG_FORMAT = 1
PNG_FORMAT = 2


@dataclass
class Preview:
    """One encoded preview, ready to be framed for each client according to its feature flags."""

    jpeg: bytes  # the encoded image: JPEG, or PNG when image_format is PNG_FORMAT
    metadata: dict[str, Any]
    image_format: int = JPEG_FORMAT

    def legacy_frame(self) -> bytes:
        return struct.pack(">II", PREVIEW_IMAGE, self.image_format) + self.jpeg

    def metadata_frame(self) -> bytes:
        meta = json.dumps(self.metadata).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + self.jpeg


def encode_preview(image: Any, max_size: int = 512, quality: int = 95) -> bytes:
    """A PIL image (or anything with `convert`) as a JPEG that fits in max_size x max_size, aspect kept."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"a preview must be a PIL image, got {type(image).__name__}")
    picture = image.convert("RGB")
    if max(picture.size) > max_size:
        picture.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(image: Any) -> bytes:
    """A PIL image as a full-size PNG (what SaveImageWebsocket sends: ComfyUI does not shrink these)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def preview_metadata(prompt_id: str, node_id: str, image_type: str = "image/jpeg") -> dict[str, Any]:
    return {
        "node_id": node_id,
        "prompt_id": prompt_id,
        "display_node_id": node_id,
        "parent_node_id": None,
        "real_node_id": node_id,
        "image_type": image_type,
    }
