"""Bounds on what one prompt may make the engine hold or send, so no workflow can exhaust the process.

The executor checks, for every node it runs:

- values that arrive through links against the receiving input's declared range (validation can only check
  literals; a linked value is known only at run time), so an Int input declared 0..100 never sees 10**9000;
- link outputs: a string above `max_string_chars` characters or an integer above `max_int_bits` bits is refused
  (string doubling and integer towers grow exponentially along a chain; each step is cheap, the tenth is not);
- UI outputs (what goes to the history and to every websocket client): above `max_ui_bytes` of JSON the node fails
  with a message naming it, instead of writing megabytes per prompt into the database.

Image decoding has its own budget (`max_image_pixels`, pixels times frames), read by the nodes and routes that
decode images from `Folders.settings["max_image_pixels"]` (see `image_pixel_budget`).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .folders import Folders

DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192  # pixels x frames one decode may produce


@dataclass
class Limits:
    max_string_chars: int = 16 * 1024 * 1024
    max_int_bits: int = 65536
    max_ui_bytes: int = 1024 * 1024


def image_pixel_budget(env: Folders | None) -> int:
    """The pixel budget (width x height x frames) for one decoded image, from the folders' settings."""
    settings = getattr(env, "settings", None) or {}
    value = settings.get("max_image_pixels")
    return int(value) if value else DEFAULT_MAX_IMAGE_PIXELS


class ImageTooLarge(ValueError):
    """An image whose decoded size would exceed the pixel budget (the message gives the size and the limit)."""


def check_image_size(width: int, height: int, frames: int, budget: int, what: str = "the image") -> None:
    """Raise ImageTooLarge if `frames` frames of width x height exceed `budget` pixels."""
    pixels = int(width) * int(height) * max(1, int(frames))
    if pixels > budget:
        frames_text = f" x {frames} frames" if frames > 1 else ""
        raise ImageTooLarge(
            f"{what} is {width}x{height}{frames_text} = {pixels:,} pixels, above the limit of {budget:,} pixels "
            "(--max-image-pixels)"
        )


def describe(value: Any, limit: int = 200) -> str:
    """A short, never-failing description of a value for error messages (repr can fail or be huge: an integer of
    more than 4300 digits cannot be turned into text at all)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return repr(value[: limit - 20]) + f"... ({len(value):,} characters)"
    try:
        text = repr(value)
    except Exception as exc:  # a value whose repr fails must not turn a node error into a server error
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_link_outputs(outputs: tuple[Any, ...], limits: Limits) -> str | None:
    """A message if a link output is too large to pass on, else None."""
    for index, value in enumerate(outputs):
        if isinstance(value, (str, bytes)) and len(value) > limits.max_string_chars:
            return (f"output {index} is a text of {len(value):,} characters, above the limit of "
                    f"{limits.max_string_chars:,}")
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > limits.max_int_bits:
            return (f"output {index} is an integer of {value.bit_length():,} bits, above the limit of "
                    f"{limits.max_int_bits:,} bits")
    return None


def ui_size(ui: dict[str, Any], cap: int) -> int:
    """The JSON size of a UI output in bytes (values JSON cannot hold counted by their text form); stops counting
    soon after `cap` so a huge output costs little to measure."""
    total = 0

    def default(value: Any) -> str:
        return describe(value, 1000)

    encoder = json.JSONEncoder(default=default)
    try:
        for chunk in encoder.iterencode(ui):
            total += len(chunk)
            if total > cap:
                return total
    except (ValueError, TypeError, RecursionError):
        return -1  # cannot be written as JSON (a circular structure, an integer too long for text)
    return total


def open_image(source: Any, budget: int, name: str = "the image") -> Any:
    """`PIL.Image.open` (header only, nothing decoded) that refuses with ImageTooLarge an image whose first frame
    is over `budget` pixels, Pillow's own bomb check included. Pillow is imported here, only when called."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow warns above its own limit; the budget below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: {exc}; the limit is {budget:,} pixels (--max-image-pixels)") from None
    try:
        check_image_size(image.size[0], image.size[1], 1, budget, name)
    except ImageTooLarge:
        image.close()
        raise
    return image
