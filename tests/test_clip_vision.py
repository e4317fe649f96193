"""CLIP vision: a tiny CLIPVisionModelWithProjection file through CLIPVisionLoader / CLIPVisionEncode. The reference
is transformers' model on pixels preprocessed by ComfyUI's formula, written out here."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodegraph.engine import Folders, Runtime
from nodegraph_nodes.diffusion.clip_vision import (
    CLIP_MEAN,
    CLIP_STD,
    config_from_shapes,
    load_clip_vision,
    tiny_clip_vision,
    write_clip_vision_file,
)


def _comfy_preprocess(image, size, crop):
    image = image.movedim(-1, 1)
    if crop:
        scale = size / min(image.shape[2], image.shape[3])
        shape = (round(scale * image.shape[2]), round(scale * image.shape[3]))
    else:
        shape = (size, size)
    image = F.interpolate(image, size=shape, mode="bicubic", antialias=True)
    h, w = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
    image = image[:, :, h:h + size, w:w + size]
    image = torch.clip(255.0 * image, 0, 255).round() / 255.0
    return (image - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


def test_clip_vision_file_and_encode(tmp_path):
    """The file loads bit for bit; the encoder's outputs (what CLIPVisionEncode returns, through the same ops call)
    equal transformers' model on ComfyUI's preprocessing, for both crop modes, on a non-square image."""
    from nodegraph_nodes.diffusion import ops
    from support.sd import Runner, make_folders

    source = tiny_clip_vision(5)
    root = tmp_path / "models"
    path = write_clip_vision_file(source, root / "clip_vision" / "cv.safetensors")
    loaded = load_clip_vision(path)
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name

    image = torch.rand(2, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    runtime = Runtime(Folders(settings={"device": "cpu"}))
    handle = ops.load_clip_vision(runtime, path)
    outputs = {}
    for crop in (True, False):
        with torch.no_grad():
            reference = source(pixel_values=_comfy_preprocess(image, 32, crop), output_hidden_states=True)
        out = outputs[crop] = ops.encode_clip_vision(runtime, handle, image, crop)
        assert torch.allclose(out.image_embeds, reference.image_embeds, atol=1e-5)
        assert torch.allclose(out.last_hidden_state, reference.last_hidden_state, atol=1e-5)
        assert torch.allclose(out["penultimate_hidden_states"], reference.hidden_states[-2], atol=1e-5)
    assert not torch.allclose(outputs[True].image_embeds, outputs[False].image_embeds)

    # the node graph accepts the wiring ComfyUI workflows use
    folders = make_folders(tmp_path, root)
    result = Runner(folders).validate({
        "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "cv.safetensors"}},
        "5": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 32, "height": 32}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["5", 0]}},
        "3": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["2", 0], "image": ["6", 0],
                                                          "crop": "none"}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    })
    assert result.ok, result.node_errors


def test_config_read_off_a_released_towers_shapes():
    """ViT-H/14 as IP-Adapter ships it (shapes only, no weights)."""
    shapes = {
        "vision_model.embeddings.patch_embedding.weight": (1280, 3, 14, 14),
        "vision_model.embeddings.position_embedding.weight": (257, 1280),
        "visual_projection.weight": (1024, 1280),
        **{f"vision_model.encoder.layers.{i}.mlp.fc1.weight": (5120, 1280) for i in range(32)},
    }
    config = config_from_shapes({k: torch.zeros(1).expand(*s) for k, s in shapes.items()})
    assert config == {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                      "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "projection_dim": 1024,
                      "hidden_act": "gelu", "layer_norm_eps": 1e-5}


def test_declarations():
    from nodegraph.engine import default_registry

    encode = default_registry().get("CLIPVisionEncode").object_info()
    assert list(encode["input"]["required"]) == ["clip_vision", "image", "crop"]
    assert encode["input"]["required"]["crop"][0] == ["center", "none"]
    assert encode["output"] == ["CLIP_VISION_OUTPUT"] and encode["category"] == "conditioning"
