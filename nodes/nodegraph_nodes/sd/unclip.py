"""unCLIP nodes: unCLIPCheckpointLoader, ImageOnlyCheckpointLoader and unCLIPConditioning (ComfyUI's names, inputs,
defaults and outputs). The model side is nodegraph_nodes/diffusion/unclip.py."""
from __future__ import annotations

from typing import Any

from nodegraph.engine import Combo, Float, Folders, Input, Node, Output, Runtime

from .loader_nodes import _file_fingerprint, _models, _with_embeddings


def _load(runtime: Runtime, env: Folders | None, ckpt_name: str, node: str) -> tuple[Any, Any, Any, Any]:
    """(MODEL, CLIP, VAE, CLIP_VISION) of a checkpoint that carries a CLIP image encoder. The file is read once for
    Load Checkpoint and these loaders alike (the same model cache entries)."""
    from ..diffusion import ops
    from ..diffusion.cache_readers import model_cache
    from ..diffusion.handles import ClipVisionHandle
    from ..diffusion.unclip import VISION_PREFIX

    path = env.model_path("checkpoints", ckpt_name)
    model, clip, vae = ops.load_checkpoint(runtime, path)
    cache = model_cache(runtime)
    refs = cache.refs(path, "checkpoint", ("info", "clip_vision"))
    with cache.use(refs["info"]) as info:
        if not info.get("clip_vision"):
            raise ValueError(
                f"{node}: {ckpt_name} holds no CLIP vision model (no `{VISION_PREFIX}*` weights): it is not an "
                "unCLIP checkpoint. Load it with Load Checkpoint, and a CLIP vision model with CLIPVisionLoader."
            )
    return model, _with_embeddings(clip, env), vae, ClipVisionHandle(refs["clip_vision"])


class unCLIPCheckpointLoader(Node):  # noqa: N801 (ComfyUI's class name)
    """Load an unCLIP checkpoint (SD 2.1 unCLIP): the model, CLIP, VAE and the CLIP vision encoder it carries."""

    display_name = "unCLIP Checkpoint Loader"
    category = "loaders"
    ckpt_name = Combo(_models("checkpoints"))
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"), Output("CLIP_VISION"))

    @classmethod
    def fingerprint(cls, env: Folders | None, ckpt_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "checkpoints", ckpt_name)

    def execute(self, ckpt_name: str) -> tuple[Any, Any, Any, Any]:
        return _load(self.context.runtime, self.context.env, ckpt_name, "unCLIPCheckpointLoader")


class ImageOnlyCheckpointLoader(Node):
    """Load a checkpoint that carries a CLIP vision encoder, without its text encoder: the model, the CLIP vision
    encoder and the VAE (in ComfyUI for image-to-video models; here it loads unCLIP checkpoints)."""

    display_name = "Image Only Checkpoint Loader (img2vid model)"
    category = "loaders/video_models"
    ckpt_name = Combo(_models("checkpoints"))
    outputs = (Output("MODEL"), Output("CLIP_VISION"), Output("VAE"))

    @classmethod
    def fingerprint(cls, env: Folders | None, ckpt_name: str = "", **_: Any) -> Any:
        return _file_fingerprint(env, "checkpoints", ckpt_name)

    def execute(self, ckpt_name: str) -> tuple[Any, Any, Any]:
        model, _clip, vae, clip_vision = _load(self.context.runtime, self.context.env, ckpt_name, "ImageOnlyCheckpointLoader")
        return model, clip_vision, vae


class unCLIPConditioning(Node):  # noqa: N801 (ComfyUI's class name)
    """Condition an unCLIP model on CLIP image embeddings: each applied image adds to the conditioning, weighted by
    strength, its embedding noised by noise_augmentation (0: as is, 1: pure noise)."""

    display_name = "unCLIP Conditioning"
    category = "conditioning"
    conditioning = Input("CONDITIONING")
    clip_vision_output = Input("CLIP_VISION_OUTPUT")
    strength = Float(1.0, min=-10.0, max=10.0, step=0.01)
    noise_augmentation = Float(0.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    def execute(self, conditioning: Any, clip_vision_output: Any, strength: float,
                noise_augmentation: float) -> tuple[Any]:
        from dataclasses import replace

        from ..diffusion.conditioning import map_entries
        from ..diffusion.unclip import UnclipSpec

        if strength == 0:  # as ComfyUI: the conditioning unchanged
            return (conditioning,)
        spec = UnclipSpec(clip_vision_output.image_embeds, float(strength), float(noise_augmentation))
        return (map_entries(conditioning, lambda c: replace(c, unclip=c.unclip + (spec,))),)


NODES = [unCLIPCheckpointLoader, ImageOnlyCheckpointLoader, unCLIPConditioning]
