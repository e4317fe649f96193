"""The tiny models the tests and `nodegraph make-tiny-models` use, written to disk in ComfyUI's folder layout.

Random weights from the configs in nodegraph_nodes/diffusion/tiny.py, written through the same writers (keymap,
split_layout, clip_vision, and this package's lora and upscale) that describe the layouts people publish, so every
loading path runs on them. Kept out of the node packs, whose loaders (checkpoint_files.py, ...) only read files:
the readers need none of this.
"""
from __future__ import annotations

import json
from pathlib import Path

from nodegraph_nodes.diffusion.checkpoint_files import write_diffusers_folder
from nodegraph_nodes.diffusion.keymap import write_controlnet_file, write_single_file, write_vae_file
from nodegraph_nodes.diffusion.tiny import (
    TINY_VAE,
    Components,
    build_vae,
    tiny_controlnet,
    tiny_refiner,
    tiny_sd1,
    tiny_sd1_inpaint,
    tiny_sd2,
    tiny_sdxl,
)


def make_tiny_models(models_root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write tiny models into ComfyUI's folder layout under `models_root`; returns name -> path.

    checkpoints/: tiny_sd1, tiny_sd2 (v-prediction), tiny_sdxl, tiny_sdxl_refiner and tiny_sd1_inpaint (a 9-channel
    inpainting UNet) as original-layout .safetensors files and as diffusers folders of the same name;
    controlnet/: tiny_controlnet_sd1 (original-layout file and diffusers folder, made from tiny_sd1's UNet),
    tiny_controlnet_sd1_diffusers_layout.safetensors (the same ControlNet as the lone weights file of a diffusers
    save_pretrained: diffusers keys, no config, as many ControlNets are published), tiny_controlnet_sdxl (an
    original-layout file made from tiny_sdxl's UNet);
    vae/: tiny_vae.safetensors (a VAE different from the checkpoints', so swapping it shows), tiny_sdxl_vae
    (tiny_sdxl's own VAE, for split-file workflows);
    diffusion_models/: tiny_sd1_unet (tiny_sd1's UNet, `model.diffusion_model.*` keys), tiny_sdxl_unet (tiny_sdxl's,
    bare keys): the two layouts UNet files come in;
    text_encoders/: tiny_sd1_clip_l (tiny_sd1's CLIP), tiny_sdxl_clip_l and tiny_sdxl_clip_g (tiny_sdxl's two).
    The split files hold the very weights of the checkpoints of the same name.
    loras/ and embeddings/: LoRAs and embeddings for tiny_sd1 / tiny_sdxl in the published layouts (lora.py).
    upscale_models/: tiny_esrgan_x4 and tiny_esrgan_x2 (random ESRGAN generators) as .safetensors and as
    Real-ESRGAN-style .pth pickles; clip_vision/: tiny_clip_vision.safetensors (a random CLIP vision tower);
    checkpoints/tiny_sd21_unclip.safetensors: an SD 2.1 unCLIP single file (diffusion/tiny_unclip.py) with its CLIP image
    encoder under `embedder.model.visual.`; style_models/tiny_style_model.safetensors: a random T2I-Adapter style
    model that reads tiny_clip_vision's features and makes tiny_sd1-wide tokens.
    gligen/: tiny_gligen_sd1.safetensors (GLIGEN layers for tiny_sd1's UNet, ComfyUI's layout).
    The same seed always writes the same bytes.
    """
    root = Path(models_root)
    written: dict[str, Path] = {}
    sd1, sdxl = tiny_sd1(seed), tiny_sdxl(seed)
    for components in (sd1, tiny_sd2(seed), sdxl, tiny_refiner(seed)):
        name = "tiny_" + components.family
        written[name] = write_single_file(components, root / "checkpoints" / f"{name}.safetensors")
        written[name + "_diffusers"] = write_diffusers_folder(components, root / "checkpoints" / name)
    inpaint = tiny_sd1_inpaint(seed)
    written["tiny_sd1_inpaint"] = write_single_file(inpaint, root / "checkpoints" / "tiny_sd1_inpaint.safetensors")
    folder = write_diffusers_folder(inpaint, root / "checkpoints" / "tiny_sd1_inpaint")
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["_class_name"] = "StableDiffusionInpaintPipeline"  # what diffusers names an inpainting folder
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written["tiny_sd1_inpaint_diffusers"] = folder
    controlnet = tiny_controlnet(sd1.unet, seed)
    written["tiny_controlnet_sd1"] = write_controlnet_file(
        controlnet, root / "controlnet" / "tiny_controlnet_sd1.safetensors"
    )
    folder = root / "controlnet" / "tiny_controlnet_sd1"
    controlnet.save_pretrained(folder)
    written["tiny_controlnet_sd1_diffusers"] = folder
    # the weights file of that folder, alone under another name: loading it must not need the config beside it
    lone = root / "controlnet" / "tiny_controlnet_sd1_diffusers_layout.safetensors"
    lone.write_bytes((folder / "diffusion_pytorch_model.safetensors").read_bytes())
    written["tiny_controlnet_sd1_diffusers_layout"] = lone
    written["tiny_controlnet_sdxl"] = write_controlnet_file(
        tiny_controlnet(sdxl.unet, seed), root / "controlnet" / "tiny_controlnet_sdxl.safetensors",
        family="controlnet_sdxl",
    )
    written["tiny_vae"] = write_vae_file(build_vae(TINY_VAE, seed + 7), root / "vae" / "tiny_vae.safetensors")
    from .lora import write_tiny_embeddings, write_tiny_loras  # loras/ and embeddings/ for those two

    written.update(write_tiny_loras(root, sd1, sdxl, seed))
    written.update(write_tiny_embeddings(root, sd1, sdxl, seed))
    from .upscale import tiny_esrgan, write_esrgan_files

    written.update(write_esrgan_files(tiny_esrgan(seed + 11), root / "upscale_models", "tiny_esrgan_x4"))
    written.update(write_esrgan_files(tiny_esrgan(seed + 12, scale=2), root / "upscale_models", "tiny_esrgan_x2"))
    from nodegraph_nodes.diffusion.clip_vision import tiny_clip_vision, write_clip_vision_file

    written["tiny_clip_vision"] = write_clip_vision_file(
        tiny_clip_vision(seed + 13), root / "clip_vision" / "tiny_clip_vision.safetensors"
    )
    from nodegraph_nodes.diffusion.tiny_unclip import tiny_sd21_unclip

    written["tiny_sd21_unclip"] = write_single_file(
        tiny_sd21_unclip(seed), root / "checkpoints" / "tiny_sd21_unclip.safetensors"
    )
    from nodegraph_nodes.diffusion.style_model import tiny_style_model, write_style_model_file

    written["tiny_style_model"] = write_style_model_file(
        tiny_style_model(seed=seed + 16), root / "style_models" / "tiny_style_model.safetensors"
    )
    written.update(write_split_files(sd1, sdxl, root))
    from .gligen import write_tiny_gligen  # gligen/: a GLIGEN model for tiny_sd1's UNet

    written["tiny_gligen_sd1"] = write_tiny_gligen(sd1.unet, root / "gligen" / "tiny_gligen_sd1.safetensors", seed + 14)
    return written


def write_split_files(sd1: Components, sdxl: Components, root: Path) -> dict[str, Path]:
    """The parts of tiny_sd1 and tiny_sdxl as files of their own (see make_tiny_models)."""
    from nodegraph_nodes.diffusion.split_layout import write_text_encoder_file, write_unet_file

    return {
        "tiny_sd1_unet": write_unet_file(sd1.unet, "sd1", sd1.scheduler_config,
                                         root / "diffusion_models" / "tiny_sd1_unet.safetensors", prefixed=True),
        "tiny_sdxl_unet": write_unet_file(sdxl.unet, "sdxl", sdxl.scheduler_config,
                                          root / "diffusion_models" / "tiny_sdxl_unet.safetensors", prefixed=False),
        "tiny_sd1_clip_l": write_text_encoder_file(sd1.text_encoders[0], sd1.tokenizers[0], "l",
                                                   root / "text_encoders" / "tiny_sd1_clip_l.safetensors"),
        "tiny_sdxl_clip_l": write_text_encoder_file(sdxl.text_encoders[0], sdxl.tokenizers[0], "l",
                                                    root / "text_encoders" / "tiny_sdxl_clip_l.safetensors"),
        "tiny_sdxl_clip_g": write_text_encoder_file(sdxl.text_encoders[1], sdxl.tokenizers[1], "g",
                                                    root / "text_encoders" / "tiny_sdxl_clip_g.safetensors"),
        "tiny_sdxl_vae": write_vae_file(sdxl.vae, root / "vae" / "tiny_sdxl_vae.safetensors"),
    }
