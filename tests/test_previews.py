"""Live previews as ComfyUI sends them: none by default (`--preview-method none`), so a plain websocket client gets
only text frames and the images it saves; previews when the server or the prompt (`extra_data.preview_method`, what
the official frontend sends) asks; TAESD decoding from `models/vae_approx` with `taesd`."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import websocket
from PIL import Image

from support.server import ServerThread, http, make_config
from support.workflows import image_workflow

ROOT = Path(__file__).resolve().parents[1]


def run_and_collect(server: ServerThread, prompt: dict, **body) -> tuple[list[bytes], list[str]]:
    """Queue like a published ComfyUI client (no feature_flags) and collect binary and text frames until done."""
    client_id = str(uuid.uuid4())
    ws = websocket.create_connection(f"{server.url.replace('http', 'ws')}/ws?clientId={client_id}")
    try:
        status, answer, _ = http("POST", f"{server.url}/prompt", {"prompt": prompt, "client_id": client_id, **body})
        assert status == 200, answer
        prompt_id = json.loads(answer)["prompt_id"]
        binary, kinds = [], []
        while True:
            frame = ws.recv()
            if isinstance(frame, bytes):
                binary.append(frame)
                continue
            message = json.loads(frame)
            kinds.append(message["type"])
            if message["type"] == "executing" and message["data"]["node"] is None \
                    and message["data"]["prompt_id"] == prompt_id:
                return binary, kinds
    finally:
        ws.close()


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    with ServerThread(make_config(tmp_path_factory.mktemp("previews"))) as running:
        yield running


@pytest.fixture(scope="module")
def auto_server(tmp_path_factory):
    with ServerThread(make_config(tmp_path_factory.mktemp("previews_auto"), preview_method="auto")) as running:
        yield running


def test_plain_client_gets_no_binary_frame_by_default(default_server):
    binary, kinds = run_and_collect(default_server, image_workflow(steps=3, shade=40))
    assert binary == []
    assert kinds.count("progress") == 3 and "executed" in kinds and "execution_success" in kinds


def test_prompt_that_asks_for_previews_gets_them(default_server):
    # (each run draws another shade: a cached node would run nothing and send no preview)
    for shade, method in enumerate(("auto", "latent2rgb", "taesd"), start=50):  # taesd here: the node's own image
        binary, _ = run_and_collect(default_server, image_workflow(steps=2, shade=shade), extra_data={
            "preview_method": method})
        assert len(binary) == 2, method
        assert binary[0][:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01"  # legacy type 1, JPEG: no feature flags sent
    # "default" (what the official frontend means by its setting's default) and unknown values take the server's
    for shade, method in enumerate(("default", "sparkles"), start=60):
        binary, kinds = run_and_collect(default_server, image_workflow(steps=2, shade=shade), extra_data={
            "preview_method": method})
        assert binary == [] and kinds.count("progress") == 2


def test_server_flag_turns_previews_on_and_a_prompt_can_turn_them_off(auto_server):
    binary, _ = run_and_collect(auto_server, image_workflow(steps=2, shade=43))
    assert len(binary) == 2
    with Image.open(io.BytesIO(binary[0][8:])) as preview:
        assert preview.format == "JPEG"
    binary, kinds = run_and_collect(auto_server, image_workflow(steps=2, shade=44),
                                    extra_data={"preview_method": "none"})
    assert binary == [] and kinds.count("progress") == 2
    status, flags, _ = http("GET", f"{auto_server.url}/api/features")
    assert status == 200 and json.loads(flags)["preview_method"] == "auto"


def test_serve_takes_comfyuis_preview_method_names(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "nodes")])}
    help_text = subprocess.run([sys.executable, "-m", "nodegraph", "serve", "--help"], capture_output=True,
                               text=True, env=env).stdout
    assert "--preview-method {none,auto,latent2rgb,taesd}" in help_text
    bad = subprocess.run([sys.executable, "-m", "nodegraph", "serve", "--preview-method", "fast"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'fast'" in bad.stderr


# --- TAESD ----------------------------------------------------------------------------------------------------------


def tiny_taesd(seed: int = 0):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 2, 1, 1))
    for param in model.parameters():  # random weights large enough to give a picture with contrast
        param.data.normal_(0, 0.3)
    return model.eval()


def save_published_layout(model, path: Path) -> None:
    """The decoder as the published taesd_decoder files store it: an nn.Sequential whose entry 0 is the clamp."""
    from safetensors.torch import save_file

    state = {}
    for key, value in model.decoder.state_dict().items():
        index, rest = key.removeprefix("layers.").split(".", 1)
        state[f"{int(index) + 1}.{rest}"] = value.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def reference_preview(model, latent: torch.Tensor) -> torch.Tensor:
    """diffusers' own decode of the first latent, in 0..255, as ComfyUI turns a [-1, 1] preview into pixels."""
    with torch.no_grad():
        pixels = model.decode(latent[:1]).sample[0].movedim(0, -1)
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round()


@pytest.mark.parametrize("layout", ["published", "diffusers"])
def test_taesd_previewer_decodes_like_diffusers(tmp_path, layout):
    from nodegraph.engine import Folders
    from nodegraph_nodes.diffusion.taesd import taesd_previewer

    model = tiny_taesd()
    folders = Folders(models_dirs=[tmp_path / "models"])
    assert taesd_previewer(folders, "sd1") is None  # nothing installed yet
    target = tmp_path / "models" / "vae_approx" / "taesd_decoder.safetensors"
    if layout == "published":
        save_published_layout(model, target)
    else:
        model.save_pretrained(tmp_path / "tiny_taesd")  # diffusers' file, encoder and all, renamed
        target.parent.mkdir(parents=True)
        (tmp_path / "tiny_taesd" / "diffusion_pytorch_model.safetensors").rename(target)
    assert taesd_previewer(folders, "sdxl") is None  # an SD1 decoder is not used for SDXL latents
    preview = taesd_previewer(folders, "sd1")
    latent = torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(1)) * 2
    image = preview(latent)
    assert image.size == (40, 48)  # TAESD upsamples 8x, like the VAE
    ours = torch.from_numpy(np.array(image)).float()
    reference = reference_preview(model, latent)
    assert reference.std() > 20  # the reference is a picture, not a flat colour
    assert (ours - reference).abs().max() <= 1


def test_taesd_previews_from_a_sampler_on_the_server(tmp_path_factory):
    from nodegraph_testmodels.files import make_tiny_models
    from support.workflows import txt2img

    models = tmp_path_factory.mktemp("taesd_models")
    make_tiny_models(models)
    save_published_layout(tiny_taesd(), models / "vae_approx" / "taesd_decoder.safetensors")
    config = make_config(tmp_path_factory.mktemp("taesd_server"))
    config.folders.models_dirs = [models]
    config.folders.settings["device"] = "cpu"
    with ServerThread(config) as server:
        binary, _ = run_and_collect(server, txt2img(**{"3.steps": 2, "3.seed": 1}))
        assert binary == []  # the server's default
        sizes = {}
        for seed, method in enumerate(("latent2rgb", "taesd"), start=2):  # another seed: the sampler runs again
            prompt = txt2img(**{"3.steps": 2, "3.seed": seed})
            binary, _ = run_and_collect(server, prompt, extra_data={"preview_method": method})
            assert len(binary) == 2, method
            with Image.open(io.BytesIO(binary[-1][8:])) as preview:
                sizes[method] = preview.size
    assert sizes == {"latent2rgb": (8, 8), "taesd": (64, 64)}  # 64x64 picture: 8x8 latent, TAESD decodes 8x


def test_checkpoint_without_preview_factors_gets_them_fitted_to_its_vae(tmp_path):
    """Real checkpoints use ComfyUI's published factors; a nodegraph-written one with its own VAE and no factors in
    its header (make-tiny-models) gets factors fitted to that VAE, which predict its decode better."""
    from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file
    from nodegraph_testmodels.files import make_tiny_models
    from nodegraph_nodes.diffusion.preview import LATENT_RGB

    make_tiny_models(tmp_path)
    components = read_checkpoint_file(tmp_path / "checkpoints" / "tiny_sd1.safetensors")
    assert components.latent_rgb is not None
    vae = components.vae.float()
    latents = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(5))  # held out from the fit
    with torch.no_grad():
        decoded = vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)
    target = torch.nn.functional.adaptive_avg_pool2d(decoded, (8, 8))

    def error(fit):
        factors, bias = torch.tensor(fit[0]), torch.tensor(fit[1])
        return (torch.einsum("nchw,cr->nrhw", latents, factors) + bias[None, :, None, None] - target).abs().mean()

    assert error(components.latent_rgb) < 0.8 * error(LATENT_RGB["sd1"])
