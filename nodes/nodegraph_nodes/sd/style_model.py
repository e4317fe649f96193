"""Style model nodes: StyleModelLoader and StyleModelApply (ComfyUI's names, inputs, defaults and outputs). Files
come from `models/style_models`; the model is nodegraph_nodes/diffusion/style_model.py."""
from __future__ import annotations

from typing import Any

from dataclasses import dataclass

from nodegraph.engine import Combo, Float, Folders, Input, Node, Output

from .loader_nodes import _file_fingerprint, _models


@dataclass(frozen=True)
class StyleModelHandle:
    """STYLE_MODEL: a style model in the model cache (its ModelRef)."""

    ref: Any

    def cache_nbytes(self) -> int:
        return 0


class StyleModelLoader(Node):
    """Load a T2I-Adapter style model (CLIP image features -> extra prompt tokens)."""

    display_name = "Load Style Model"
    category = "loaders"
    style_model_name = Combo(_models("style_models"))
    outputs = (Output("STYLE_MODEL"),)

    @classmethod
    def fingerprint(cls, env: Folders | None, style_model_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "style_models", style_model_name)

    def execute(self, style_model_name: str) -> tuple[Any]:
        from ..diffusion.cache_readers import model_cache

        env = self.context.env
        cache = model_cache(self.context.runtime)
        path = env.model_path("style_models", style_model_name)
        ref = cache.refs(path, "style_model", ("style_model",))["style_model"]
        cache.preload(ref)  # read now, so that a file that is not a style model fails in this node
        return (StyleModelHandle(ref),)


class StyleModelApply(Node):
    """Append a style model's tokens for the encoded image(s) to every prompt of the conditioning: "multiply" scales
    them by strength; "attn_bias" (an attention bias, read only by model families nodegraph does not run) leaves
    them as they are."""

    display_name = "Apply Style Model"
    category = "conditioning/style_model"
    conditioning = Input("CONDITIONING")
    style_model = Input("STYLE_MODEL")
    clip_vision_output = Input("CLIP_VISION_OUTPUT")
    strength = Float(1.0, min=0.0, max=10.0, step=0.001)
    strength_type = Combo(["multiply", "attn_bias"])
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: Any, style_model: Any, clip_vision_output: Any, strength: float,
                strength_type: str) -> tuple[Any]:
        from ..diffusion import style_model as library
        from ..diffusion.cache_readers import model_cache

        with model_cache(self.context.runtime).use(style_model.ref) as model:
            tokens = library.style_tokens(model, clip_vision_output.last_hidden_state)
        return (library.apply(conditioning, tokens, strength, strength_type),)


NODES = [StyleModelLoader, StyleModelApply]
