"""The CLIP image encoder inside an unCLIP checkpoint (see unclip.py), read for the model cache's checkpoint reader.

Kept out of checkpoint_files.py and unclip.py so that neither needs the other's imports: the cache's reader (cache_readers.py) asks
for it after reading the checkpoint's other parts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .unclip import VISION_PREFIX, open_clip_visual_to_transformers


def read_embedded_clip_vision(path: str | Path, dtype: torch.dtype | None = None) -> Any:
    """The CLIPVisionModelWithProjection stored under `embedder.model.visual.` of a single-file checkpoint, or None
    when the file (or folder) has none. The architecture comes from our header (tiny test models) or is read off
    the shapes, as for CLIP vision files."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from .clip_vision import config_from_shapes
    from .keymap import METADATA_KEY
    from .checkpoint_files import SingleFile, _assemble, _empty

    path = Path(path)
    if path.is_dir():
        return None
    file = SingleFile(path)
    keys = [k for k in file.shapes if k.startswith(VISION_PREFIX)]
    if not keys:
        return None
    header = json.loads(file.metadata.get(METADATA_KEY, "{}") or "{}")
    values = file.tensors() if file._tensors is not None else file._read(keys)  # only the encoder's tensors
    plain = {k[len(VISION_PREFIX):]: values[k] for k in keys}
    state = open_clip_visual_to_transformers(plain)
    settings = dict(header["clip_vision"]) if header.get("clip_vision") else config_from_shapes(state)
    model = _empty(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**settings)))
    return _assemble("clip vision (embedder)", model, state, path, dtype)
