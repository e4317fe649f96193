"""Hostile inputs for the hardening tests, made small on disk: image bombs (a real PNG whose pixels take 144 MB
decoded, a PNG header claiming 30000x30000, an animated GIF of many frames). Hostile graphs are in `workflows`."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path


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
