"""Write docs/nodes.md: every node type the built-in packs register, by category, from the registry itself, and
ComfyUI's core node types (listed in docs/comfyui_core_nodes.txt) marked implemented or not, with why not.

    python scripts/make_nodes_doc.py          # rewrite docs/nodes.md
    python scripts/make_nodes_doc.py --check  # exit 1 if docs/nodes.md is out of date

tests/test_nodes_doc.py fails when the file and the registry disagree, so adding a node means re-running this.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes")]

from nodegraph.engine import NodeRegistry  # noqa: E402

DOC = ROOT / "docs" / "nodes.md"
COMFY_CORE = ROOT / "docs" / "comfyui_core_nodes.txt"

# Why a ComfyUI core node type is not in nodegraph yet, by the ComfyUI module it comes from. A module maps to the
# capability nodegraph lacks (a model family it does not run, a media type it does not handle); names listed in
# REASON_BY_NAME override it. Anything unlisted is "not implemented yet".
REASON_BY_MODULE = {
    # media nodegraph does not handle
    "comfy_extras.nodes_audio": "audio",
    "comfy_extras.nodes_audio_encoder": "audio",
    "comfy_extras.nodes_ace": "audio (ACE-Step model family)",
    "comfy_extras.nodes_video": "video",
    "comfy_extras.nodes_video_model": "video (Stable Video Diffusion)",
    "comfy_extras.nodes_wan": "video (Wan model family)",
    "comfy_extras.nodes_nop": "video (Wan model family)",
    "comfy_extras.nodes_camera_trajectory": "video (Wan camera control)",
    "comfy_extras.nodes_context_windows": "video (context windows)",
    "comfy_extras.nodes_lt": "video (LTX-Video model family)",
    "comfy_extras.nodes_mochi": "video (Mochi model family)",
    "comfy_extras.nodes_cosmos": "video (Cosmos model family)",
    "comfy_extras.nodes_hunyuan3d": "3D (Hunyuan3D)",
    "comfy_extras.nodes_stable3d": "3D (Stable Zero123 / SV3D)",
    "comfy_extras.nodes_load_3d": "3D",
    "comfy_extras.nodes_webcam": "webcam capture",
    # model families nodegraph does not run (it runs SD1.x, SD2.x, SDXL)
    "comfy_extras.nodes_hunyuan": "model family not run (Hunyuan)",
    "comfy_extras.nodes_flux": "model family not run (Flux)",
    "comfy_extras.nodes_sd3": "model family not run (SD3)",
    "comfy_extras.nodes_slg": "model family not run (DiT models: SD3, Flux...)",
    "comfy_extras.nodes_rope": "model family not run (DiT models with RoPE)",
    "comfy_extras.nodes_stable_cascade": "model family not run (Stable Cascade)",
    "comfy_extras.nodes_pixart": "model family not run (PixArt)",
    "comfy_extras.nodes_hidream": "model family not run (HiDream)",
    "comfy_extras.nodes_lumina2": "model family not run (Lumina 2)",
    "comfy_extras.nodes_qwen": "model family not run (Qwen-Image)",
    "comfy_extras.nodes_model_patch": "model family not run (Qwen-Image / Flux model patches)",
    "comfy_extras.nodes_chroma_radiance": "model family not run (Chroma Radiance)",
    "comfy_extras.nodes_edit_model": "model family not run (edit models: Flux Kontext, Qwen edit)",
    "comfy_extras.nodes_lotus": "model family not run (Lotus)",
    "comfy_extras.nodes_sdupscale": "model family not run (SD x4 upscaler)",
    "comfy_extras.nodes_photomaker": "model family not run (PhotoMaker ID encoder)",
    # features nodegraph does not have
    "comfy_extras.nodes_train": "training",
    "comfy_extras.nodes_dataset": "training (datasets)",
    "comfy_extras.nodes_lora_extract": "training (LoRA extraction)",
    "comfy_extras.nodes_hooks": "hooks (scheduled LoRA / conditioning hooks)",
    "comfy_extras.nodes_hypernetwork": "hypernetworks",
}
REASON_BY_NAME = {
    "LoraLoader": "LoRA not implemented yet",
    "LoraLoaderModelOnly": "LoRA not implemented yet",
    "CLIPVisionLoader": "CLIP vision models not run",
    "CLIPVisionEncode": "CLIP vision models not run",
    "StyleModelLoader": "style models (CLIP vision) not run",
    "StyleModelApply": "style models (CLIP vision) not run",
    "unCLIPCheckpointLoader": "unCLIP models not run",
    "unCLIPConditioning": "unCLIP models not run",
    "DiffusersLoader": "not implemented yet (Load Checkpoint reads diffusers folders)",
    "T5TokenizerOptions": "model family not run (T5 text encoders)",
    "ModelSamplingAuraFlow": "model family not run (AuraFlow)",
    "ModelSamplingFlux": "model family not run (Flux)",
    "ModelSamplingSD3": "model family not run (SD3)",
    "ModelSamplingStableCascade": "model family not run (Stable Cascade)",
    "ModelMergeAuraflow": "model family not run (AuraFlow)",
    "ModelMergeCosmos14B": "video (Cosmos model family)",
    "ModelMergeCosmos7B": "video (Cosmos model family)",
    "ModelMergeCosmosPredict2_14B": "video (Cosmos model family)",
    "ModelMergeCosmosPredict2_2B": "video (Cosmos model family)",
    "ModelMergeFlux1": "model family not run (Flux)",
    "ModelMergeLTXV": "video (LTX-Video model family)",
    "ModelMergeMochiPreview": "video (Mochi model family)",
    "ModelMergeQwenImage": "model family not run (Qwen-Image)",
    "ModelMergeSD35_Large": "model family not run (SD3)",
    "ModelMergeSD3_2B": "model family not run (SD3)",
    "ModelMergeWAN2_1": "video (Wan model family)",
    "UNetTemporalAttentionMultiply": "video (temporal attention)",
    # ImageOnlyCheckpointLoader runs on unCLIP checkpoints (the image-conditioned family nodegraph runs); saving one
    # is for the image-to-video / 3D families (SVD, Stable Zero123, SV3D), which it does not run
    "ImageOnlyCheckpointSave": "video / 3D (SVD, Stable Zero123, SV3D checkpoints: families not run)",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def comfyui_core_nodes(path: Path = COMFY_CORE) -> list[tuple[str, str]]:
    """(class_type, ComfyUI module) for each line of the core-node list, in file order; # lines are comments."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, module = line.split("\t")
            rows.append((name.strip(), module.strip()))
    return rows


def why_not(name: str, module: str) -> str:
    return REASON_BY_NAME.get(name) or REASON_BY_MODULE.get(module, "not implemented yet")


def render_comfyui_coverage(registry: NodeRegistry, core: list[tuple[str, str]]) -> list[str]:
    """The section that marks each ComfyUI core node type implemented (its name resolves here) or not, and why."""
    known = set(registry.names())
    done = [name for name, _ in core if name in known]
    lines = [
        "## ComfyUI core node types",
        "",
        f"{len(done)} of the {len(core)} ComfyUI core node types listed in `docs/comfyui_core_nodes.txt` are "
        "implemented (a type counts when a workflow naming it runs here, under its own name or as an alias). "
        "That file says how the list was derived and how complete it is.",
        "",
        "| ComfyUI class_type | ComfyUI module | in nodegraph | why not |",
        "|---|---|---|---|",
    ]
    for name, module in core:
        if name in known:
            lines.append(f"| {name} | {module} | yes |  |")
        else:
            lines.append(f"| {name} | {module} | no | {_cell(why_not(name, module))} |")
    return lines + [""]


def render(registry: NodeRegistry, core: list[tuple[str, str]] | None = None) -> str:
    """The Markdown page for the node types of `registry` (aliases listed with the node they name)."""
    classes = {}
    for name in registry.names():
        cls = registry.get(name)
        classes[cls.type_name] = cls
    by_category: dict[str, list] = {}
    for cls in classes.values():
        by_category.setdefault(cls.category, []).append(cls)
    lines = [
        "# Node types",
        "",
        "Generated by `python scripts/make_nodes_doc.py` from the built-in packs' registry; "
        "`tests/test_nodes_doc.py` keeps it in step. Names are the `class_type` values workflows use; "
        "\"also\" lists other names (ComfyUI's, usually) that resolve to the same node.",
        "",
        f"{len(classes)} node types, {len(registry.names())} names.",
        "",
    ]
    lines += render_comfyui_coverage(registry, comfyui_core_nodes() if core is None else core)
    for category in sorted(by_category):
        lines += [f"## {category}", "", "| class_type | also | display name | inputs | outputs | pack |",
                  "|---|---|---|---|---|---|"]
        for cls in sorted(by_category[category], key=lambda c: c.type_name):
            inputs = ", ".join(i.name + ("?" if i.optional else "") for i in cls.inputs.values())
            outputs = ", ".join(f"{o.label} ({o.type})" if o.label != o.type else o.type for o in cls.outputs)
            if cls.output_node:
                outputs = (outputs + ", " if outputs else "") + "output node"
            lines.append(
                f"| {cls.type_name} | {', '.join(cls.aliases)} | {_cell(cls.title())} | {_cell(inputs)} | "
                f"{_cell(outputs)} | {registry.pack_of(cls.type_name)} |"
            )
        lines.append("")
    return "\n".join(lines)


def builtin_registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.load_builtin()
    return registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args()
    text = render(builtin_registry())
    if args.check:
        sys.exit(0 if DOC.read_text() == text else 1)
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
