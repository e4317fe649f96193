"""ComfyUI's latent nodes: compositing, blending, batches, transforms, arithmetic, tiled VAE, latent files.

A LATENT is a dict {"samples": [B, C, h, w], optional "noise_mask", "batch_index"}; nodes return a shallow copy
with new samples so cached upstream values are never changed. Inputs and semantics follow ComfyUI's `nodes.py`,
`comfy_extras/nodes_latent.py` and `nodes_mask.py`.
"""
from __future__ import annotations

from typing import Any

from nodegraph.engine import (
    MAX_RESOLUTION, Boolean, Combo, Float, Folders, Input, Int, Node, NodeResult, Output, String,
)

from .images import ROTATIONS, quarter_turns
from .files import input_file, input_fingerprint, output_prefix_problem
from .outputs import next_path


def _latent(step: int = 8, default: int = 0, minimum: int = 0) -> Int:
    return Int(default, min=minimum, max=MAX_RESOLUTION, step=step)


def _copy(samples: dict[str, Any], x: Any) -> dict[str, Any]:
    return {**samples, "samples": x}


class LatentComposite(Node):
    """Paste samples_from into samples_to at (x, y) pixels; `feather` pixels of linear blending at edges that lie
    inside samples_to."""

    display_name = "Latent Composite"
    category = "latent"
    samples_to = Input("LATENT")
    samples_from = Input("LATENT")
    x = _latent()
    y = _latent()
    feather = _latent()
    outputs = (Output("LATENT"),)

    def execute(self, samples_to, samples_from, x, y, feather) -> tuple[dict[str, Any]]:
        import torch

        x, y, feather = x // 8, y // 8, feather // 8
        to = samples_to["samples"]
        out = to.clone()
        src = samples_from["samples"][:, :, : to.shape[2] - y, : to.shape[3] - x]
        h, w = src.shape[2], src.shape[3]
        if feather == 0:
            out[:, :, y:y + h, x:x + w] = src
        else:
            mask = torch.ones_like(src)
            for t in range(feather):
                ramp = (t + 1) / feather
                if y != 0:
                    mask[:, :, t] *= ramp
                if y + h < to.shape[2]:
                    mask[:, :, h - 1 - t] *= ramp
                if x != 0:
                    mask[:, :, :, t] *= ramp
                if x + w < to.shape[3]:
                    mask[:, :, :, w - 1 - t] *= ramp
            out[:, :, y:y + h, x:x + w] = src * mask + out[:, :, y:y + h, x:x + w] * (1 - mask)
        return (_copy(samples_to, out),)


class LatentCompositeMasked(Node):
    """Paste `source` into `destination` at (x, y) pixels through an optional mask (1 = source)."""

    category = "latent"
    destination = Input("LATENT")
    source = Input("LATENT")
    x = _latent()
    y = _latent()
    resize_source = Boolean(False)
    mask = Input("MASK", optional=True)
    outputs = (Output("LATENT"),)

    def execute(self, destination, source, x, y, resize_source, mask=None) -> tuple[dict[str, Any]]:
        from ..diffusion.image_ops import composite

        out = composite(destination["samples"], source["samples"], x, y, mask, 8, resize_source)
        return (_copy(destination, out),)


class LatentBlend(Node):
    """samples1 * blend_factor + samples2 * (1 - blend_factor); samples2 is resized (bicubic, center crop) to
    samples1's shape if they differ."""

    display_name = "Latent Blend"
    category = "_for_testing"
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    blend_factor = Float(0.5, min=0.0, max=1.0, step=0.01)
    outputs = (Output("LATENT"),)

    def execute(self, samples1, samples2, blend_factor) -> tuple[dict[str, Any]]:
        from ..diffusion.image_ops import resize_nchw

        a, b = samples1["samples"], samples2["samples"]
        if a.shape != b.shape:
            b = resize_nchw(b, a.shape[3], a.shape[2], "bicubic", "center")
        return (_copy(samples1, a * blend_factor + b * (1 - blend_factor)),)


class LatentFromBatch(Node):
    """`length` latents of a batch from `batch_index`; they keep their place in the batch's noise (batch_index)."""

    display_name = "Latent From Batch"
    category = "latent/batch"
    samples = Input("LATENT")
    batch_index = Int(0, min=0, max=63)
    length = Int(1, min=1, max=64)
    outputs = (Output("LATENT"),)

    def execute(self, samples, batch_index, length) -> tuple[dict[str, Any]]:
        from ..diffusion.image_ops import repeat_to_batch

        x = samples["samples"]
        start = min(x.shape[0] - 1, batch_index)
        length = min(x.shape[0] - start, length)
        out = _copy(samples, x[start:start + length].clone())
        if "noise_mask" in samples:
            masks = samples["noise_mask"]
            if masks.shape[0] == 1:
                out["noise_mask"] = masks.clone()
            else:
                out["noise_mask"] = repeat_to_batch(masks, x.shape[0])[start:start + length].clone()
        if "batch_index" in samples:
            out["batch_index"] = list(samples["batch_index"][start:start + length])
        else:
            out["batch_index"] = list(range(start, start + length))
        return (out,)


class RepeatLatentBatch(Node):
    """The batch repeated `amount` times; repeated copies get batch indices past the original ones."""

    display_name = "Repeat Latent Batch"
    category = "latent/batch"
    samples = Input("LATENT")
    amount = Int(1, min=1, max=64)
    outputs = (Output("LATENT"),)

    def execute(self, samples, amount) -> tuple[dict[str, Any]]:
        x = samples["samples"]
        out = _copy(samples, x.repeat(amount, 1, 1, 1))
        if "noise_mask" in samples and samples["noise_mask"].shape[0] > 1:
            out["noise_mask"] = samples["noise_mask"].repeat(amount, 1, 1, 1)
        if "batch_index" in samples:
            indices = list(samples["batch_index"])
            offset = max(indices) - min(indices) + 1
            out["batch_index"] = indices + [i + k * offset for k in range(1, amount) for i in indices]
        return (out,)


class LatentBatch(Node):
    """Join two latent batches; samples2 is resized to samples1's size if needed."""

    category = "latent/batch"
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    outputs = (Output("LATENT"),)

    def execute(self, samples1, samples2) -> tuple[dict[str, Any]]:
        import torch

        from ..diffusion.image_ops import reshape_latent_to

        a = samples1["samples"]
        b = reshape_latent_to(a.shape, samples2["samples"], repeat_batch=False)
        out = _copy(samples1, torch.cat((a, b)))
        out["batch_index"] = list(samples1.get("batch_index", range(a.shape[0]))) + list(
            samples2.get("batch_index", range(b.shape[0])))
        return (out,)


class LatentRotate(Node):
    """Rotate latents clockwise by quarter turns."""

    display_name = "Rotate Latent"
    category = "latent/transform"
    samples = Input("LATENT")
    rotation = Combo(ROTATIONS)
    outputs = (Output("LATENT"),)

    def execute(self, samples, rotation) -> tuple[dict[str, Any]]:
        import torch

        return (_copy(samples, torch.rot90(samples["samples"], k=quarter_turns(rotation), dims=[3, 2])),)


class LatentFlip(Node):
    """Mirror latents: "x-axis" flips top and bottom, "y-axis" left and right."""

    display_name = "Flip Latent"
    category = "latent/transform"
    samples = Input("LATENT")
    flip_method = Combo(["x-axis: vertically", "y-axis: horizontally"])
    outputs = (Output("LATENT"),)

    def execute(self, samples, flip_method) -> tuple[dict[str, Any]]:
        import torch

        dims = [2] if flip_method.startswith("x") else [3]
        return (_copy(samples, torch.flip(samples["samples"], dims=dims)),)


class LatentCrop(Node):
    """A width x height pixel crop at (x, y); the corner stays at least 64 pixels from the right and bottom."""

    display_name = "Crop Latent"
    category = "latent/transform"
    samples = Input("LATENT")
    width = _latent(default=512, minimum=64)
    height = _latent(default=512, minimum=64)
    x = _latent()
    y = _latent()
    outputs = (Output("LATENT"),)

    def execute(self, samples, width, height, x, y) -> tuple[dict[str, Any]]:
        s = samples["samples"]
        x = min(x // 8, s.shape[3] - 8)
        y = min(y // 8, s.shape[2] - 8)
        return (_copy(samples, s[:, :, y:y + height // 8, x:x + width // 8]),)


class LatentAdd(Node):
    """samples1 + samples2 (samples2 resized and repeated to samples1's shape)."""

    category = "latent/advanced"
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    outputs = (Output("LATENT"),)

    def execute(self, samples1, samples2) -> tuple[dict[str, Any]]:
        from ..diffusion.image_ops import reshape_latent_to

        a = samples1["samples"]
        return (_copy(samples1, a + reshape_latent_to(a.shape, samples2["samples"])),)


class LatentSubtract(Node):
    """samples1 - samples2 (samples2 resized and repeated to samples1's shape)."""

    category = "latent/advanced"
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    outputs = (Output("LATENT"),)

    def execute(self, samples1, samples2) -> tuple[dict[str, Any]]:
        from ..diffusion.image_ops import reshape_latent_to

        a = samples1["samples"]
        return (_copy(samples1, a - reshape_latent_to(a.shape, samples2["samples"])),)


class LatentMultiply(Node):
    """samples * multiplier."""

    category = "latent/advanced"
    samples = Input("LATENT")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01)
    outputs = (Output("LATENT"),)

    def execute(self, samples, multiplier) -> tuple[dict[str, Any]]:
        return (_copy(samples, samples["samples"] * multiplier),)


class LatentInterpolate(Node):
    """Interpolate direction and length separately, per latent pixel: the channel vectors are normalised, mixed
    by `ratio` (1 = samples1), renormalised, and scaled by the mixed lengths."""

    category = "latent/advanced"
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("LATENT"),)

    def execute(self, samples1, samples2, ratio) -> tuple[dict[str, Any]]:
        import torch

        from ..diffusion.image_ops import reshape_latent_to

        a = samples1["samples"]
        b = reshape_latent_to(a.shape, samples2["samples"])
        na = torch.linalg.vector_norm(a, dim=1, keepdim=True)
        nb = torch.linalg.vector_norm(b, dim=1, keepdim=True)
        mixed = torch.nan_to_num(a / na) * ratio + torch.nan_to_num(b / nb) * (1.0 - ratio)
        direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1, keepdim=True))
        return (_copy(samples1, direction * (na * ratio + nb * (1.0 - ratio))),)


class LatentBatchSeedBehavior(Node):
    """"fixed": every latent of the batch gets the first one's noise; "random": each its own (batch_index
    dropped)."""

    category = "latent/advanced"
    samples = Input("LATENT")
    seed_behavior = Combo(["random", "fixed"], default="fixed")
    outputs = (Output("LATENT"),)

    def execute(self, samples, seed_behavior) -> tuple[dict[str, Any]]:
        out = dict(samples)
        if seed_behavior == "random":
            out.pop("batch_index", None)
        else:
            first = samples.get("batch_index", [0])[0]
            out["batch_index"] = [first] * samples["samples"].shape[0]
        return (out,)


class VAEDecodeTiled(Node):
    """VAE Decode in overlapping tiles (bounded memory for large images); seams are blended."""

    display_name = "VAE Decode (Tiled)"
    category = "_for_testing"
    samples = Input("LATENT")
    vae = Input("VAE")
    tile_size = Int(512, min=64, max=4096, step=32)
    overlap = Int(64, min=0, max=4096, step=32)
    temporal_size = Int(64, min=8, max=4096, step=4, tooltip="Only used for video VAEs: frames per tile.")
    temporal_overlap = Int(8, min=4, max=4096, step=4, tooltip="Only used for video VAEs: frames of overlap.")
    outputs = (Output("IMAGE"),)

    def execute(self, samples, vae, tile_size, overlap, temporal_size=64, temporal_overlap=8) -> tuple[Any]:
        from .tiled_vae import decode_tiled

        if tile_size < overlap * 4:
            overlap = tile_size // 4
        return (decode_tiled(self.context.runtime, vae, samples["samples"], tile_size // 8, overlap // 8),)


class VAEEncodeTiled(Node):
    """VAE Encode in overlapping tiles (bounded memory for large images); seams are blended."""

    display_name = "VAE Encode (Tiled)"
    category = "_for_testing"
    pixels = Input("IMAGE")
    vae = Input("VAE")
    tile_size = Int(512, min=64, max=4096, step=64)
    overlap = Int(64, min=0, max=4096, step=32)
    temporal_size = Int(64, min=8, max=4096, step=4, tooltip="Only used for video VAEs: frames per tile.")
    temporal_overlap = Int(8, min=4, max=4096, step=4, tooltip="Only used for video VAEs: frames of overlap.")
    outputs = (Output("LATENT"),)

    def execute(self, pixels, vae, tile_size, overlap, temporal_size=64, temporal_overlap=8):
        from .tiled_vae import encode_tiled

        if tile_size < overlap * 4:  # as the decoder does; the half-size tiling would otherwise not advance
            overlap = tile_size // 4
        return ({"samples": encode_tiled(self.context.runtime, vae, pixels, tile_size, overlap)},)


class SaveLatent(Node):
    """Save latents as `<prefix>_<counter:05>_.latent` (safetensors, ComfyUI's layout) in the output folder."""

    category = "_for_testing"
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    samples = Input("LATENT")
    filename_prefix = String("latents/ComfyUI")

    @classmethod
    def check_inputs(cls, env: Folders | None, filename_prefix: str = "latents/ComfyUI", **_: Any) -> dict[str, str] | None:
        return output_prefix_problem(env, filename_prefix)

    def execute(self, samples, filename_prefix) -> NodeResult:
        import json

        import torch
        from safetensors.torch import save_file

        metadata = None
        if not self.context.runtime.settings.get("disable_metadata"):
            metadata = {"prompt": json.dumps(self.context.prompt) if self.context.prompt else ""}
            for key, value in (self.context.extra_pnginfo or {}).items():
                metadata[key] = json.dumps(value)
        path, record = next_path(self.context.env.output_dir, filename_prefix, "latent")
        # "latent_format_version_0" marks raw (unscaled) VAE latents; files without it hold SD1-scaled ones
        tensors = {"latent_tensor": samples["samples"].contiguous(), "latent_format_version_0": torch.tensor([])}
        save_file(tensors, str(path), metadata=metadata)
        return NodeResult(ui={"latents": [record]})


def _latent_files(env: Folders | None) -> list[str]:
    if env is None:
        return []
    return sorted(env.list_inputs((".latent",)))


class LoadLatent(Node):
    """Load a `.latent` file (safetensors) from the input folder."""

    category = "_for_testing"
    latent = Combo(_latent_files, strict=False)
    outputs = (Output("LATENT"),)

    @classmethod
    def check_inputs(cls, env: Folders | None, latent: str = "", **_: Any) -> dict[str, str] | None:
        return input_file(env, "latent", latent, "latent", show_folder=False)[1]

    @classmethod
    def fingerprint(cls, env: Folders | None, latent: str = "", **_: Any) -> Any:
        return input_fingerprint(env, latent)

    def execute(self, latent: str) -> tuple[dict[str, Any]]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.context.env.annotated_path(latent)
        try:
            tensors = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{latent!r} is not a safetensors latent file: {exc}") from None
        if "latent_tensor" not in tensors:
            raise ValueError(f"{latent!r} has no 'latent_tensor' (keys: {sorted(tensors)})")
        # files from before the version marker hold latents scaled by SD1's factor
        scale = 1.0 if "latent_format_version_0" in tensors else 1.0 / 0.18215
        return ({"samples": tensors["latent_tensor"].float() * scale},)


NODES = [
    LatentComposite, LatentCompositeMasked, LatentBlend, LatentFromBatch, RepeatLatentBatch, LatentBatch,
    LatentRotate, LatentFlip, LatentCrop, LatentAdd, LatentSubtract, LatentMultiply, LatentInterpolate,
    LatentBatchSeedBehavior, VAEDecodeTiled, VAEEncodeTiled, SaveLatent, LoadLatent,
]
