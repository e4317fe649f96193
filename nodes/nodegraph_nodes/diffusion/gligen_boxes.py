"""GLIGENTextBoxApply's side of GLIGEN: the phrase's text embedding and the boxes kept on a conditioning (the layers
and how the sampler applies the boxes: gligen.py)."""
from __future__ import annotations

from typing import Any

import torch

from .gligen import GligenError, GligenHandle


def box_embedding(runtime: Any, clip: Any, text: str) -> torch.Tensor:
    """The pooled, unprojected text embedding of a box's phrase [1, D] (ComfyUI: return_pooled="unprojected"):
    the CLIP text model's pooler output of the prompt's first 77-token window, on the CPU."""
    from .embeddings import EmbeddingLibrary
    from .cache_readers import model_cache
    from .ops import use_clip
    from .text_encoding import TEXT_FAMILIES, ClipTextEncoder

    if clip.family not in ("sd1", "sd2", "sd2_base"):
        raise GligenError(f"GLIGEN runs on SD1 and SD2 models; this CLIP is {clip.family}'s")
    cache = model_cache(runtime)
    with use_clip(cache, clip) as parts:
        encoder = ClipTextEncoder(TEXT_FAMILIES[clip.family], parts["models"], parts["tokenizers"],
                                  stop_at_clip_layer=clip.stop_at_layer,
                                  embeddings=EmbeddingLibrary(clip.embedding_dirs))
        role = encoder.family.encoders[0]
        window = encoder.tokenize(text)[role.name][0]
        with torch.no_grad():
            _, pooled = encoder._forward(parts["models"][role.name], role, -1, window.ids, window.embeds)
    return pooled.detach().to("cpu", torch.float32)


def apply_text_box(runtime: Any, conditioning: Any, clip: Any, gligen: GligenHandle, text: str, width: int,
                   height: int, x: int, y: int) -> Any:
    """GLIGENTextBoxApply: every entry of `conditioning` gets the box (pixels, kept as latent cells: // 8) after the
    boxes it already has, all with this GLIGEN model (ComfyUI keeps the last model given)."""
    from dataclasses import replace

    from .conditioning import map_entries

    box = (box_embedding(runtime, clip, text), height // 8, width // 8, y // 8, x // 8)

    def add(cond: Any) -> Any:
        previous = cond.gligen[1] if cond.gligen is not None else ()
        return replace(cond, gligen=(gligen, previous + (box,)))

    return map_entries(conditioning, add)
