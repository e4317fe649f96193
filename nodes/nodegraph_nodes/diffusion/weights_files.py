"""Read weights files by what they hold, never by what they are called.

Model files arrive with any extension: a safetensors file renamed `.ckpt`, a pickle named `.bin`, a LoRA saved as
`.pt`. The format is decided from the first bytes:

- safetensors: an 8-byte little-endian header length N, then N bytes of a JSON object (tensor name -> dtype, shape,
  data offsets, plus an optional `__metadata__` of strings), then the raw tensor data.
- "pickle-zip": torch.save's default format since torch 1.6, a zip archive whose first entry is `<name>/data.pkl`
  (local file headers start with `PK\\x03\\x04`).
- "pickle": torch.save's legacy format or any plain pickle, starting with the PROTO opcode 0x80 and protocol 2..5.

Unpickling can run arbitrary code, so pickle content is only read when the caller allows it, and then only through
`torch.load(weights_only=True)`: torch's restricted unpickler, which rebuilds tensors and plain containers (dicts,
lists, numbers, strings) and refuses every other global. Nothing here ever does a full unpickle.
"""
from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path
from typing import Any, Literal

import torch

Format = Literal["safetensors", "pickle-zip", "pickle", "unknown"]

# A safetensors header is JSON text; real ones are kilobytes to a few megabytes. The cap keeps a random 8-byte
# prefix from being taken for a header length.
_MAX_HEADER = 100 * 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
# Keys under which training scripts nest the weights: Lightning/LDM ("state_dict"), BasicSR / ESRGAN ("params_ema"
# preferred over "params", as the EMA weights are the released ones).
_WRAPPERS = ("state_dict", "params_ema", "params")
_CONVERT_HINT = (
    "Convert it to .safetensors once, in a Python you trust: "
    "`import torch, safetensors.torch; sd = torch.load(PATH, map_location='cpu', weights_only=True); "
    "safetensors.torch.save_file(sd.get('state_dict', sd), OUT)`"
)


class WeightsFileError(ValueError):
    """A weights file that cannot be read: missing, truncated, of an unknown format, or a refused pickle."""


def sniff_format(path: str | Path) -> Format:
    """The format of the file at `path` judged by its content: "safetensors", "pickle-zip", "pickle" or "unknown".

    A file whose start looks like safetensors but is cut short still reports "safetensors" (loading it then says it
    is truncated). Raises WeightsFileError when the file cannot be opened.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as error:
        raise WeightsFileError(f"{path}: cannot be read: {error.strerror or error}") from error
    if head.startswith(_ZIP_MAGIC):
        return "pickle-zip" if _is_torch_zip(head) else "unknown"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 10:
        (length,) = struct.unpack("<Q", head[:8])
        # the JSON object starts right after the length (safetensors writes no leading whitespace)
        if 2 <= length <= _MAX_HEADER and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _is_torch_zip(head: bytes) -> bool:
    """torch.save writes `<archive name>/data.pkl` as the zip's first entry (the local header's name at byte 30)."""
    if len(head) < 30:
        return False
    (name_length,) = struct.unpack("<H", head[26:28])
    name = head[30:30 + name_length]
    return name.endswith(b"data.pkl")


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of a safetensors file and the byte size of its data section, checked for truncation."""
    size = path.stat().st_size
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if 8 + length > size:
            raise WeightsFileError(
                f"{path}: truncated safetensors file: its header says {length} bytes of JSON, the file has "
                f"{size - 8} after the length field"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsFileError(f"{path}: damaged safetensors header (not valid JSON: {error})") from error
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path}: damaged safetensors header (a JSON {type(header).__name__}, not an object)")
    data_size = size - 8 - length
    ends = [
        entry["data_offsets"][1] for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2
    ]
    needed = max(ends, default=0)
    if needed > data_size:
        raise WeightsFileError(
            f"{path}: truncated safetensors file: its tensors need {needed} bytes of data, the file holds {data_size}"
        )
    return header, data_size


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (string -> string); {} for other formats or when there is none."""
    path = Path(path)
    if sniff_format(path) != "safetensors":
        return {}
    header, _ = _safetensors_header(path)
    metadata = header.get("__metadata__") or {}
    return dict(metadata) if isinstance(metadata, dict) else {}


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, from its header alone (no tensor is read)."""
    path = Path(path)
    kind = sniff_format(path)
    if kind != "safetensors":
        raise WeightsFileError(f"{path}: not a safetensors file (its content is {kind})")
    header, _ = _safetensors_header(path)
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def load_state_dict(path: str | Path, *, allow_pickle: bool, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a weights file, by name, on `device`.

    safetensors content loads whatever the file is called. Pickle content (zip or legacy) is refused with a
    WeightsFileError unless `allow_pickle`; then it is read with torch's restricted unpickler
    (`torch.load(weights_only=True)`), and a top-level `state_dict` / `params_ema` / `params` entry is taken as the
    weights when it is a dict of tensors. Nested dicts of tensors are flattened with "." between the keys; numbers
    and strings beside the tensors (epoch, step counters) are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: no such file")
    kind = sniff_format(path)
    if kind == "safetensors":
        _safetensors_header(path)  # a clear error for a truncated or damaged file before safetensors' own
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(device))
        except SafetensorError as error:
            raise WeightsFileError(f"{path}: damaged safetensors file: {error}") from error
    if kind == "unknown":
        raise WeightsFileError(
            f"{path}: not a weights file of a known format (neither safetensors nor a torch pickle; it starts with "
            f"{_first_bytes(path)!r})"
        )
    loaded = load_pickle_object(path, allow_pickle=allow_pickle, device=device)
    return _tensors_of(loaded, path)


def load_pickle_object(path: str | Path, *, allow_pickle: bool, device: str | torch.device = "cpu") -> Any:
    """The object in a torch pickle file (zip or legacy), read with torch's restricted unpickler.

    For callers that need the structure around the tensors (textual-inversion embeddings keep theirs under
    `string_to_param`). Refused with a WeightsFileError unless `allow_pickle`.
    """
    path = Path(path)
    kind = sniff_format(path)
    if kind not in ("pickle", "pickle-zip"):
        raise WeightsFileError(f"{path}: not a torch pickle file (its content is {kind})")
    if not allow_pickle:
        raise WeightsFileError(
            f"{path}: this file is a pickle ({'torch zip archive' if kind == 'pickle-zip' else 'legacy pickle'}, "
            f"whatever its extension), and pickles are not loaded here because unpickling can run arbitrary code. "
            + _CONVERT_HINT
        )
    try:
        # an open file, not the path: torch.load may pick a reader from the file name (it hands `*.safetensors` to
        # safetensors), and the content has already been judged here
        with path.open("rb") as f:
            return torch.load(f, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsFileError(
            f"{path}: holds more than tensors and plain containers, so torch.load(weights_only=True) refused it "
            f"({_unpickler_reason(error)}). nodegraph never does a full unpickle; if you trust the file's source, load it "
            "with torch.load(weights_only=False) in your own Python and save its tensors with "
            "safetensors.torch.save_file"
        ) from error
    except Exception as error:  # a cut-off or damaged file fails at whichever read comes up short, in many ways
        raise WeightsFileError(f"{path}: truncated or damaged torch file ({type(error).__name__}: {error})") from error


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's long weights-only message that says what was refused (a global, an opcode)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", str(error))
    return found.group(1).strip() if found else type(error).__name__


def _tensors_of(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, dict):
        raise WeightsFileError(f"{path}: expected a dict of tensors, found a {type(loaded).__name__}")
    if not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        for wrapper in _WRAPPERS:
            inner = loaded.get(wrapper)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                loaded = inner
                break
    flat: dict[str, torch.Tensor] = {}
    _flatten(loaded, "", flat)
    if not flat:
        raise WeightsFileError(f"{path}: holds no tensors (top-level keys: {sorted(map(str, loaded))[:8]})")
    return flat


def _flatten(value: Any, prefix: str, into: dict[str, torch.Tensor]) -> None:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, torch.Tensor):
            into[name] = item
        elif isinstance(item, dict):
            _flatten(item, name + ".", into)


def _first_bytes(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(8)
