"""Writers of the tiny test models: random weights in the file layouts people publish, written to disk.

- `files`: `make_tiny_models`, the folder tree that the tests and `nodegraph make-tiny-models` use.
- `lora`: LoRAs and textual-inversion embeddings for the tiny SD1 / SDXL models (kohya, diffusers, pickle).
- `upscale`: a small ESRGAN (RRDBNet) generator and its files.

The in-memory tiny models themselves (configs and builders) stay in `nodegraph_nodes.diffusion.tiny`, which the
node packs use; this package sits above the node packs and nothing in them, the engine or the server imports it
(the CLI only when `make-tiny-models` runs).
"""
