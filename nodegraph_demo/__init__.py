"""The demo models nodegraph ships, since no weights can be downloaded: data, checker, training, evaluation.

- `dataset`: seeded synthetic 64x64 images of coloured shapes with captions and ground truth (no torch).
- `checker`: deterministic prompt-adherence scoring of an image against a demo caption (no torch).
- `lora_concept`: the concept the demo LoRA teaches (giant shapes) and how the checker measures it.
- `train`, `train_lora`, `train_upscaler`: CPU training of the demo checkpoints, LoRA and upscale model.
- `evaluate`: adherence of the shipped checkpoints, as a table and a grid image; `--image` scores one picture.

A package of its own above the node packs: it uses their model code (`nodegraph_nodes.diffusion`) and the engine
to run the example workflows, and nothing in the node packs, the engine or the server imports it.
The trained files live in the repository's `demo_models/` (ComfyUI folder layout); see its README.
"""
