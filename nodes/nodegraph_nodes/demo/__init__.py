"""The demo models nodegraph ships, since no weights can be downloaded: data, checker, training, evaluation.

- `dataset`: seeded synthetic 64x64 images of coloured shapes with captions and ground truth (no torch).
- `checker`: deterministic prompt-adherence scoring of an image against a demo caption (no torch).
- `train`: CPU training of the SD1 / ControlNet / SDXL base / SDXL refiner demo checkpoints.
- `evaluate`: adherence of the shipped checkpoints, as a table and a grid image.

The trained files live in the repository's `demo_models/` (ComfyUI folder layout); see its README.
"""
