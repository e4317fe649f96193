"""Test support for the nodegraph suite: one package, registered as pytest plugins in tests/conftest.py.

Modules, by what they hold:

- `registry`: `make_registry`, the one way the tests build a node registry (built-in packs and/or test packs).
- `engine_nodes`, `server_nodes`: the test-only node packs (counting / failing / slow nodes; previews, PNGs).
- `workflows`: API-format prompts the tests submit (math, image, sleep, txt2img, hostile graphs).
- `server`: the real server in-process, in a thread or as `nodegraph serve`; HTTP and websocket helpers.
- `editor`: Chromium driven by Playwright against the real server.
- `hostile`: image bombs written small on disk.
- `object_info`: hand-written ComfyUI ``object_info`` records for the UI-format tests.
- `tiny`: tiny seeded models for the model tests, built on nodegraph_nodes.diffusion.tiny.
- `sampling`: closed-form denoisers for sampler tests.
- `sd`: tiny checkpoints on disk, folders and a runner for workflows with the SD pack.
- `models`: model-library helpers (weight comparison, real-size layouts on the meta device).
- `ray`: a small local Ray and helpers for the Ray executor tests.

Modules that define fixtures are plugins (listed in tests/conftest.py); they import torch only inside functions, so a test
file that needs no model pays nothing for them.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository


