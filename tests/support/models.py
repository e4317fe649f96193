"""Shared helpers for the model-library tests (tests/test_models_*.py).

Module-scoped fixtures keep the tiny models built once per test file; `real_layout_shapes` gives the key -> shape
map of a real-size checkpoint without allocating it (models built on the meta device, keys mapped by keymap.py).
A plugin: torch and the model libraries are imported inside the functions, so loading it costs nothing.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch


def assert_same_weights(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    """The two modules hold the same tensor names with bit-identical values (and dtypes)."""
    import torch

    a, e = actual.state_dict(), expected.state_dict()
    assert sorted(a) == sorted(e)
    different = [k for k in e if a[k].dtype != e[k].dtype or not torch.equal(a[k], e[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def real_layout_shapes(family_name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a real `family_name` single-file checkpoint, built from the bundled configs on meta."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodegraph_nodes.diffusion import keymap
    from nodegraph_nodes.diffusion.families import FAMILIES
    from nodegraph_nodes.diffusion.tiny import Components

    family = FAMILIES[family_name]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(family.config("unet"))
        vae = AutoencoderKL.from_config(family.config("vae"))
        encoders = []
        for spec in family.text_encoders:
            config = CLIPTextConfig.from_dict(
                {k: v for k, v in family.config(spec.subfolder).items() if k != "architectures"}
            )
            encoders.append((CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel)(config))
    components = Components(family_name, unet, vae, encoders, [])
    return {k: tuple(v.shape) for k, v in keymap.checkpoint_state_dict(components).items()}


def real_controlnet_shapes(config_folder: str, original_layout: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a real ControlNet file, original layout (`control_model.*`) or diffusers keys."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    from nodegraph_nodes.diffusion import keymap
    from nodegraph_nodes.diffusion.families import bundled_config

    with init_empty_weights():
        controlnet = ControlNetModel.from_config(bundled_config(config_folder, ""))
    state = controlnet.state_dict()
    if original_layout:
        state = {keymap.CONTROLNET_PREFIX + k: v for k, v in keymap.controlnet_to_original(state, controlnet.config).items()}
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def tiny_models_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """make_tiny_models written once per test module; name -> path."""
    from nodegraph_testmodels.files import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any socket connection attempt raises (and is recorded)."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
