"""Hostile inputs for the hardening tests, made small on disk: image bombs (a real PNG whose pixels take 144 MB
decoded, a PNG header claiming 30000x30000, an animated GIF of many frames) and long graphs."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, width: int, height: int, complete: bool = True) -> Path:
    """A greyscale PNG of width x height black pixels, compressed to a few hundred KB (written row by row, never
    held whole). `complete=False` writes the header and only the first rows of pixel data: enough for anything
    that reads the header, a broken file for anything that decodes it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    pieces = []
    rows = height if complete else min(height, 16)
    block = row * 64
    for _ in range(rows // 64):
        pieces.append(compressor.compress(block))
    pieces.append(compressor.compress(row * (rows % 64)))
    pieces.append(compressor.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(pieces))
                     + _chunk(b"IEND", b""))
    return path


def gif_frames(path: Path, size: int, frames: int) -> Path:
    """An animated GIF of `frames` frames of size x size (alternating two pictures, so none is merged away)."""
    from PIL import Image

    a = Image.new("P", (size, size), 0)
    b = Image.new("P", (size, size), 1)
    a.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    b.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    a.save(path, save_all=True, append_images=[b if i % 2 == 0 else a for i in range(frames - 1)], duration=10,
           loop=0, optimize=False, disposal=1)
    return path


def power_tower(stages: int) -> dict[str, Any]:
    """The 405-byte freeze: Int Math power on 2**63-1, chained."""
    prompt: dict[str, Any] = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 2**63 - 1}}}
    for i in range(stages):
        prompt[str(i + 2)] = {"class_type": "IntMath", "inputs": {"a": [str(i + 1), 0], "op": "power", "b": 1024}}
    prompt["99"] = {"class_type": "ShowText", "inputs": {"value": [str(stages + 1), 0]}}
    return prompt


def chain(n: int) -> dict[str, Any]:
    """An n-node utility chain: Int -> Int Math add ... -> Show Text."""
    prompt: dict[str, Any] = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "op": "add", "b": 1}}
    prompt[str(n - 1)] = {"class_type": "ShowText", "inputs": {"value": [str(n - 2), 0]}}
    return prompt


def cycle(n: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {str(i): {"class_type": "ToString", "inputs": {"value": [str((i - 1) % n), 0]}}
                              for i in range(n)}
    prompt["out"] = {"class_type": "ShowText", "inputs": {"value": ["0", 0]}}
    return prompt


def string_doubling(steps: int) -> dict[str, Any]:
    """Each Concatenate joins the previous string with itself: 2**steps times the first one."""
    prompt: dict[str, Any] = {"0": {"class_type": "PrimitiveString", "inputs": {"value": "x" * 64}}}
    for i in range(1, steps + 1):
        prompt[str(i)] = {"class_type": "StringConcat",
                          "inputs": {"first": [str(i - 1), 0], "second": [str(i - 1), 0], "separator": ""}}
    prompt["out"] = {"class_type": "ShowText", "inputs": {"value": [str(steps), 0]}}
    return prompt
