"""Prompt -> `Conditioning` with transformers CLIP text models, the way ComfyUI's CLIPTextEncode does it.

The steps, per text encoder of the model family:

1. Tokenize with weights. The prompt is parsed into weighted segments (`prompt_weights`); each segment is tokenized
   on its own and packed into windows of `BOS + 75 tokens + EOS`, padded with the tokenizer's pad token to 77.
   A segment shorter than 8 tokens never straddles two windows: if it does not fit, the window is closed and the
   segment starts the next one. Longer segments fill the window and continue in the next (ComfyUI's rule, which
   keeps short weighted phrases whole).
2. Encode each window with its own forward pass, take the family's hidden layer (ComfyUI numbering: -1 the last
   layer, -2 the penultimate, ...), optionally through the text model's final layer norm, and concatenate the
   windows along the token axis: a prompt of n windows gives `77 * n` tokens.
3. Weight: where a token's weight w is not 1, its row becomes `z_empty + (z - z_empty) * w`, with `z_empty` the
   same layer's encoding of the empty prompt at the same position. Rows of weight 1 are untouched, so a prompt with
   no weights encodes exactly as the plain model does, and a weight never changes any other row.
4. Several encoders (SDXL) are concatenated on the feature axis; when their prompts give different window counts
   the shorter ones are padded with empty-prompt windows (as CLIPTextEncodeSDXL does). The pooled output is the
   unweighted first window's, from the encoder the family names.

Layers, checked against both projects:
- SD1 (ComfyUI's default "last"): the last layer through the final layer norm, i.e. the model's
  `last_hidden_state`. CLIPSetLastLayer(-2) gives the penultimate layer *through the final layer norm*, which is
  what diffusers' `clip_skip=1` gives: ComfyUI's `stop_at_clip_layer = -n` is diffusers' `clip_skip = n - 1`.
- SDXL: both encoders' penultimate layer, without the final layer norm (diffusers' SDXL pipelines do the same).
  ComfyUI's CLIPSetLastLayer sets the layer of every encoder, each keeping its own layer-norm choice; diffusers'
  SDXL `clip_skip = k` is ComfyUI's `-(k + 2)`.
- A layer beyond the model's depth (say -24 on a 12-layer model) falls back to `last_hidden_state`, as in ComfyUI.
- Pooled: the model's own pooled output (projected for `CLIPTextModelWithProjection`), always from the final
  layer, whatever layer the embeddings come from.

Outputs are float32 on the text model's device (ComfyUI also returns float32 conditioning), whatever the model dtype.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, PreTrainedTokenizerBase

from .conditioning import Conditioning
from .embeddings import split_embeddings
from .prompt_weights import parse_prompt_weights

#: Segments with at least this many tokens may be split across windows; shorter ones move whole (ComfyUI's value).
SPLITTABLE_SEGMENT_TOKENS = 8

ClipModel = CLIPTextModel | CLIPTextModelWithProjection


@dataclass(frozen=True)
class EncoderRole:
    """What one CLIP text encoder of a family contributes.

    name: the key of its model and tokenizer, and of its prompt when prompts differ per encoder ("l" for CLIP-L,
        "g" for OpenCLIP bigG, the names of CLIPTextEncodeSDXL's text_l / text_g).
    layer: the hidden state used by default, -1 the last layer, -2 the penultimate (ComfyUI numbering).
    final_layer_norm: whether that hidden state goes through the text model's final layer norm.
    """

    name: str
    layer: int
    final_layer_norm: bool


@dataclass(frozen=True)
class TextFamily:
    """How a model family turns text into conditioning: its encoders, in feature-concatenation order, and which of
    them supplies the pooled output (None when the family's UNet takes no pooled text embedding)."""

    encoders: tuple[EncoderRole, ...]
    pooled_from: str | None


SD1 = TextFamily(encoders=(EncoderRole("l", layer=-1, final_layer_norm=True),), pooled_from=None)
SDXL = TextFamily(
    encoders=(EncoderRole("l", layer=-2, final_layer_norm=False), EncoderRole("g", layer=-2, final_layer_norm=False)),
    pooled_from="g",
)
SDXL_REFINER = TextFamily(encoders=(EncoderRole("g", layer=-2, final_layer_norm=False),), pooled_from="g")
# SD2 conditions on OpenCLIP-H's penultimate layer through the final layer norm. diffusers' converter (which the
# loader uses) leaves the last of a real file's 24 layers out, so that is the loaded model's last_hidden_state.
SD2 = SD1

TEXT_FAMILIES: dict[str, TextFamily] = {
    "sd1": SD1, "sd2": SD2, "sd2_base": SD2, "sdxl": SDXL, "sdxl_refiner": SDXL_REFINER,
}


@dataclass(frozen=True)
class TokenWindow:
    """One encoder input: `ids` (BOS, tokens, EOS, padding) and a weight per position (1.0 on special tokens).

    `embeds`: (position, vector) pairs of textual-inversion vectors; their positions hold the BOS id in `ids` as a
    placeholder (never EOS, whose first position is where the pooled output is read)."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    embeds: tuple[tuple[int, torch.Tensor], ...] = field(default=(), compare=False)


def _segment_groups(
    tokenizer: PreTrainedTokenizerBase, text: str, embeddings: Any, encoder: str, width: int
) -> list[list[int | torch.Tensor]]:
    """A weighted segment as groups of tokens (ids, or vectors for `embedding:name`): the text between embedding
    references is one group, each embedding another, as ComfyUI groups them for the window rule."""
    pieces = split_embeddings(text) if embeddings is not None else [("text", text)]
    groups: list[list[int | torch.Tensor]] = []
    for kind, piece in pieces:
        if kind == "embedding":
            vectors, piece = embeddings.resolve(piece, encoder, width)
            if vectors is not None:
                groups.append(list(vectors))
        ids = tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"] if piece else []
        if ids:
            groups.append(ids)
    return groups


def tokenize_weighted(
    tokenizer: PreTrainedTokenizerBase, prompt: str, length: int = 77, *, embeddings: Any = None,
    encoder: str = "l", width: int = 0,
) -> list[TokenWindow]:
    """Tokenize `prompt` with its weights into windows of `length` tokens (at least one window, even for "").

    `embeddings` (an `embeddings.EmbeddingLibrary`) turns `embedding:name` into that embedding's vectors for
    encoder role `encoder` of hidden size `width`; without it the words are tokenized as written."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    capacity = length - 2
    windows: list[list[tuple[int | torch.Tensor, float]]] = [[]]
    for segment in parse_prompt_weights(prompt):
        for group in _segment_groups(tokenizer, segment.text, embeddings, encoder, width):
            if len(group) < SPLITTABLE_SEGMENT_TOKENS and len(windows[-1]) + len(group) > capacity:
                windows.append([])
            for token in group:
                if len(windows[-1]) == capacity:
                    windows.append([])
                windows[-1].append((token, segment.weight))
    out = []
    for content in windows:
        ids = [bos] + [t if isinstance(t, int) else bos for t, _ in content] + [eos] + [pad] * (capacity - len(content))
        weights = [1.0] + [w for _, w in content] + [1.0] * (capacity - len(content) + 1)
        embeds = tuple((i + 1, t) for i, (t, _) in enumerate(content) if not isinstance(t, int))
        out.append(TokenWindow(tuple(ids), tuple(weights), embeds))
    return out


@dataclass(frozen=True, eq=False)
class ClipTextEncoder:
    """The CLIP value of the node graph: a family's text encoders and tokenizers, keyed by `EncoderRole.name`.

    `stop_at_clip_layer` overrides every encoder's layer (CLIPSetLastLayer); None keeps the family's defaults.
    Immutable: `with_last_layer` returns a new encoder sharing the same models.
    """

    family: TextFamily
    models: Mapping[str, ClipModel]
    tokenizers: Mapping[str, PreTrainedTokenizerBase]
    stop_at_clip_layer: int | None = None
    embeddings: Any = None  # an embeddings.EmbeddingLibrary for `embedding:name`, or None (tokenized as written)

    def __post_init__(self) -> None:
        names = {role.name for role in self.family.encoders}
        if names - set(self.models) or names - set(self.tokenizers):
            raise ValueError(f"need a model and a tokenizer for each of {sorted(names)}")
        if self.stop_at_clip_layer is not None and self.stop_at_clip_layer >= 0:
            raise ValueError(
                f"stop_at_clip_layer counts from the end and must be negative, got {self.stop_at_clip_layer}"
            )

    def with_last_layer(self, stop_at_clip_layer: int) -> ClipTextEncoder:
        """CLIPSetLastLayer: -1 is the last layer, -2 the penultimate, for every encoder of the family."""
        return replace(self, stop_at_clip_layer=stop_at_clip_layer)

    def tokenize(self, text: str | Mapping[str, str]) -> dict[str, list[TokenWindow]]:
        """Windows per encoder, padded with empty-prompt windows to a common count.

        `text` is one prompt for every encoder, or a prompt per encoder name (CLIPTextEncodeSDXL's text_g/text_l).
        """
        prompts = {role.name: text if isinstance(text, str) else text[role.name] for role in self.family.encoders}
        tokens = {
            name: tokenize_weighted(self.tokenizers[name], prompt, self._length(name), embeddings=self.embeddings,
                                    encoder=name, width=self.models[name].config.hidden_size)
            for name, prompt in prompts.items()
        }
        count = max(len(windows) for windows in tokens.values())
        for name, windows in tokens.items():
            empty = tokenize_weighted(self.tokenizers[name], "", self._length(name))
            windows += empty * (count - len(windows))
        return tokens

    @torch.no_grad()
    def encode_tokens(self, tokens: Mapping[str, list[TokenWindow]]) -> Conditioning:
        """Encode windows from `tokenize` into a Conditioning (embeds, and pooled when the family has one)."""
        parts, pooled = [], None
        for role in self.family.encoders:
            layer = role.layer if self.stop_at_clip_layer is None else self.stop_at_clip_layer
            embeds, first_pooled = self._encode_windows(role, layer, tokens[role.name])
            parts.append(embeds)
            if role.name == self.family.pooled_from:
                pooled = first_pooled
        return Conditioning(embeds=torch.cat(parts, dim=-1), pooled=pooled)

    def encode(self, text: str | Mapping[str, str]) -> Conditioning:
        """CLIPTextEncode (one prompt) or CLIPTextEncodeSDXL's text part (a prompt per encoder name)."""
        return self.encode_tokens(self.tokenize(text))

    def _length(self, name: str) -> int:
        return self.models[name].config.max_position_embeddings

    def _encode_windows(
        self, role: EncoderRole, layer: int, windows: list[TokenWindow]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[1, 77 * windows, dim] weighted embeddings and the first window's pooled output, float32."""
        model = self.models[role.name]
        encoded = [self._forward(model, role, layer, w.ids, w.embeds) for w in windows]
        if any(weight != 1.0 for w in windows for weight in w.weights):
            empty = tokenize_weighted(self.tokenizers[role.name], "", self._length(role.name))[0]
            z_empty, _ = self._forward(model, role, layer, empty.ids)
            encoded = [(_weigh(z, z_empty, w.weights), p) for (z, p), w in zip(encoded, windows)]
        return torch.cat([z for z, _ in encoded], dim=1), encoded[0][1]

    @staticmethod
    def _forward(
        model: ClipModel, role: EncoderRole, layer: int, ids: tuple[int, ...],
        embeds: tuple[tuple[int, torch.Tensor], ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One window through the model: (the chosen hidden state [1, 77, dim], pooled [1, pooled_dim]).

        Embedding vectors replace the token-embedding rows at their positions (a hook on the token embedding, so
        position embeddings and everything after are the model's own)."""
        hook = None
        if embeds:
            def put_vectors(_module: torch.nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
                out = out.clone()
                for position, vector in embeds:
                    out[0, position] = vector.to(out.device, out.dtype)
                return out

            hook = _token_embedding(model).register_forward_hook(put_vectors)
        try:
            out = model(input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True)
        finally:
            if hook is not None:
                hook.remove()
        pooled = out.text_embeds if isinstance(model, CLIPTextModelWithProjection) else out.pooler_output
        if abs(layer) > model.config.num_hidden_layers:
            hidden = out.last_hidden_state
        else:
            hidden = out.hidden_states[layer]
            if role.final_layer_norm:
                hidden = _final_layer_norm(model)(hidden)
        return hidden.float(), pooled.float()


def _final_layer_norm(model: ClipModel) -> torch.nn.Module:
    """The text transformer's final LayerNorm. transformers 5 flattened `CLIPTextModel` (no `.text_model`), while
    `CLIPTextModelWithProjection` still wraps the transformer in `.text_model`."""
    return getattr(model, "text_model", model).final_layer_norm


def _token_embedding(model: ClipModel) -> torch.nn.Module:
    return getattr(model, "text_model", model).embeddings.token_embedding


def _weigh(z: torch.Tensor, z_empty: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """Move each row of weight w != 1 along the line from the empty prompt's row: z_empty + (z - z_empty) * w."""
    w = torch.tensor(weights, dtype=z.dtype, device=z.device)
    rows = w != 1.0
    out = z.clone()
    out[:, rows] = (z[:, rows] - z_empty[:, rows]) * w[rows, None] + z_empty[:, rows]
    return out


def sdxl_time_ids(
    *, height: int, width: int, crop_h: int = 0, crop_w: int = 0, target_height: int, target_width: int
) -> torch.Tensor:
    """SDXL base size conditioning [1, 6]: original size, crop's top-left, target size, each (height, width).

    The order of diffusers' `add_time_ids` (original_size + crops_coords_top_left + target_size) and of ComfyUI's
    SDXL `encode_adm`; CLIPTextEncodeSDXL's widgets list width before height, so take care when wiring them.
    """
    return torch.tensor([[height, width, crop_h, crop_w, target_height, target_width]], dtype=torch.float32)


def refiner_time_ids(
    *, height: int, width: int, aesthetic_score: float, crop_h: int = 0, crop_w: int = 0
) -> torch.Tensor:
    """SDXL refiner size conditioning [1, 5]: original size, crop's top-left, aesthetic score.

    ComfyUI's CLIPTextEncodeSDXLRefiner has no crop inputs (zero); its `ascore` defaults to 6.0, and the usual
    negative prompt takes 2.5, as diffusers' refiner defaults do.
    """
    return torch.tensor([[height, width, crop_h, crop_w, aesthetic_score]], dtype=torch.float32)
