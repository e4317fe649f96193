"""Textual-inversion embeddings: `embedding:name` in a prompt stands for the vectors stored in models/embeddings.

Syntax (ComfyUI's): a word that starts with `embedding:` at the start of the prompt, after a space or after a
newline names an embedding; the name runs to the next whitespace, and trailing commas are dropped if the name with
them does not exist ("embedding:style, a cat"). It works inside weights, `(embedding:style:1.2)`. The file is looked
up in each embeddings folder as `name`, `name.safetensors`, `name.pt`, `name.bin`. A name that is not found is
logged as a warning naming it and dropped from the prompt, as ComfyUI does.

Files people publish (all read by content, pickles through torch's weights-only unpickler):
- A1111 `.pt`: {"string_to_param": {"*": [n, dim]}, "name": ..., "step": ...};
- `.safetensors` with "emb_params" [n, dim] (A1111's safetensors export) or any single tensor;
- SDXL embeddings: {"clip_l": [n, 768], "clip_g": [n, 1280]}, one table per text encoder.
The vectors for an encoder are the ones under its key ("clip_l", "clip_g") when the file has it, else the file's
first tensor; vectors of another width than the encoder's are skipped with a warning.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

IDENTIFIER = "embedding:"
EXTENSIONS = ("", ".safetensors", ".pt", ".pth", ".bin")
# encoder role (text_encoding.EncoderRole.name) -> the key SDXL embedding files use for it
ENCODER_KEYS = {"l": "clip_l", "g": "clip_g"}

_SPLIT = re.compile(r"(?:^|(?<=[ \n]))" + re.escape(IDENTIFIER))


def split_embeddings(text: str) -> list[tuple[str, str]]:
    """`text` as ("text", chunk) and ("embedding", name-and-what-follows) pieces, in order.

    An "embedding" piece holds everything up to the next embedding reference; `take_name` splits off the name.
    """
    pieces = _SPLIT.split(text)
    out = [("text", pieces[0])] if pieces[0] else []
    out += [("embedding", p) for p in pieces[1:]]
    return out


@dataclass
class EmbeddingLibrary:
    """Finds and reads embeddings in `folders`; each file is read once per library (one per encode)."""

    folders: tuple[str, ...] = ()
    _loaded: dict[str, dict[str, torch.Tensor] | None] = field(default_factory=dict, repr=False)

    def find(self, name: str) -> Path | None:
        from nodegraph.engine.folders import UnsafePath, resolve_inside

        for folder in self.folders:
            for extension in EXTENSIONS:
                try:
                    path = resolve_inside(Path(folder), name + extension)
                except UnsafePath:
                    return None
                if path.is_file():
                    return path
        return None

    def tables(self, name: str) -> dict[str, torch.Tensor] | None:
        """The tensors of embedding `name` ({"*": ...} or {"clip_l": ..., "clip_g": ...}), None if not found."""
        if name not in self._loaded:
            path = self.find(name)
            self._loaded[name] = read_embedding_file(path) if path is not None else None
        return self._loaded[name]

    def vectors(self, name: str, encoder: str, width: int) -> torch.Tensor | None:
        """[n, width] vectors of `name` for encoder role `encoder`; None (warned) when absent or of another width."""
        tables = self.tables(name)
        if tables is None:
            return None
        key = ENCODER_KEYS.get(encoder)
        vectors = tables[key] if key in tables else next(iter(tables.values()))
        vectors = vectors.reshape(-1, vectors.shape[-1])
        if vectors.shape[-1] != width:
            log.warning("embedding:%s has vectors of width %d, this text encoder takes %d; it is ignored",
                        name, vectors.shape[-1], width)
            return None
        return vectors

    def resolve(self, piece: str, encoder: str, width: int) -> tuple[torch.Tensor | None, str]:
        """An "embedding" piece -> (its vectors or None, the text left after the name)."""
        words = piece.split(maxsplit=1)
        if not words:
            return None, ""
        name, rest = words[0], (words[1] if len(words) > 1 else "")
        if self.tables(name) is None:
            stripped = name.rstrip(",")
            if stripped != name and self.tables(stripped) is not None:
                rest = name[len(stripped):] + " " + rest
                name = stripped
            else:
                log.warning("embedding:%s does not exist (looked in %s), ignoring it", name,
                            ", ".join(self.folders) or "no embeddings folder")
                return None, rest
        return self.vectors(name, encoder, width), rest


def read_embedding_file(path: Path) -> dict[str, torch.Tensor]:
    """The vector tables of an embedding file by key: {"*": [n, dim]} for single-table files (A1111 .pt, "emb_params"
    safetensors), {"clip_l": ..., "clip_g": ...} for SDXL files."""
    from .weights_files import load_pickle_object, load_state_dict, sniff_format

    if sniff_format(path) in ("pickle", "pickle-zip"):
        loaded = load_pickle_object(path, allow_pickle=True)
        if isinstance(loaded, dict) and isinstance(loaded.get("string_to_param"), dict):
            return {"*": next(iter(loaded["string_to_param"].values())).float()}
        if isinstance(loaded, list):  # some trainers save a list of {name: tensor}
            tensors = [t for item in loaded if isinstance(item, dict) for t in item.values()
                       if isinstance(t, torch.Tensor)]
            return {"*": torch.cat([t.reshape(-1, t.shape[-1]).float() for t in tensors])}
    state = load_state_dict(path, allow_pickle=True)
    tables = {k: v.float() for k, v in state.items() if k in ENCODER_KEYS.values()}
    if tables:
        return tables
    if "emb_params" in state:
        return {"*": state["emb_params"].float()}
    return {"*": next(iter(state.values())).float()}
