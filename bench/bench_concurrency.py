"""Benchmark: prompts per second with 1..16 clients, one prompt at a time vs `--concurrency` with batched UNet calls.

Each client holds its own websocket and sends txt2img prompts one after another (its next prompt when the last one
finished), each with a seed of its own, through a real server on loopback. The same clients and seeds run twice in
this process: against a server that runs prompts one at a time (ComfyUI's way, nodegraph's default) and against
`--concurrency N --max-batch ROWS` (N = the number of clients, at most 16). Printed per client count: prompts per
second of each, their ratio, latency p50 / p95 of each, and the largest pixel difference between the two runs' images
of the same seed (a prompt gives the same image batched as alone).

    python bench/bench_concurrency.py                       # the shipped demo SD1 (64x64, 20 steps)
    python bench/bench_concurrency.py --model real-size     # SD1.5's architecture, random weights, 64x64
    python bench/bench_concurrency.py --clients 1,2,4,8,16 --prompts 3 --steps 20
    python bench/bench_concurrency.py --model real-size --size 512 --device cuda --precision fp16        # a GPU
    python bench/bench_concurrency.py --model real-size-sdxl --size 1024 --device cuda --precision fp16

The real-size checkpoints (SD1.5: UNet 860M parameters; SDXL base: 2.6B; built from the bundled configs with random
weights) are written to a temporary folder first.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes")]

import numpy as np  # noqa: E402
from aiohttp import ClientSession, WSMsgType, web  # noqa: E402
from PIL import Image  # noqa: E402

from nodegraph.engine import Folders  # noqa: E402
from nodegraph.paths import default_models_dirs  # noqa: E402
from nodegraph.server import ServerConfig, create_app  # noqa: E402

DEMO_CHECKPOINT = "nodegraph-demo-sd1.safetensors"
SETTINGS = {"device": "cpu", "precision": "auto", "size": 64}  # from the command line
TEXTS = ["a red circle", "a blue square", "a green triangle", "a yellow circle and a red square"]


# --model -> (family, bundled config folder, checkpoint file name)
REAL_SIZE = {"real-size": ("sd1", "sd15", "random-sd15.safetensors"),
             "real-size-sdxl": ("sdxl", "sdxl_base", "random-sdxl.safetensors")}


def write_real_size_checkpoint(models_root: Path, model: str) -> str:
    """The architecture of SD1.5 or SDXL base from the bundled configs, random weights, as an original-layout single
    file; returns its name."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodegraph_nodes.diffusion.families import bundled_config
    from nodegraph_nodes.diffusion.keymap import write_single_file
    from nodegraph_nodes.diffusion.tiny import Components, clip_tokenizer, seeded

    family, folder, name = REAL_SIZE[model]
    with seeded(0):
        unet = UNet2DConditionModel.from_config(bundled_config(folder, "unet")).eval()
        vae = AutoencoderKL.from_config(bundled_config(folder, "vae")).eval()
        encoders = [CLIPTextModel(CLIPTextConfig(**bundled_config(folder, "text_encoder"))).eval()]
        tokenizers = [clip_tokenizer(None)]
        if family == "sdxl":
            encoders.append(CLIPTextModelWithProjection(
                CLIPTextConfig(**bundled_config(folder, "text_encoder_2"))).eval())
            tokenizers.append(clip_tokenizer(None, pad_token="!"))
    components = Components(family, unet, vae, encoders, tokenizers, bundled_config(folder, "scheduler"))
    (models_root / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_single_file(components, models_root / "checkpoints" / name)
    return name


def workflow(checkpoint: str, text: str, seed: int, steps: int, prefix: str, size: int) -> dict:
    prompt = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    prompt["4"]["inputs"]["ckpt_name"] = checkpoint
    prompt["5"]["inputs"].update(width=size, height=size)
    prompt["6"]["inputs"]["text"] = text
    prompt["3"]["inputs"].update(seed=seed, steps=steps)
    prompt["9"]["inputs"]["filename_prefix"] = prefix
    return prompt


async def run_clients(models_dirs: list[Path], out: Path, checkpoint: str, clients: int, prompts: int, steps: int,
                      concurrency: int, max_batch: int) -> tuple[float, list[float], dict[int, np.ndarray]]:
    """(seconds for all prompts, latencies, seed -> image) for `clients` clients against one fresh server."""
    settings = {"device": SETTINGS["device"], "precision": SETTINGS["precision"]}
    settings |= {"max_batch": max_batch} if concurrency > 1 else {}
    folders = Folders(models_dirs=models_dirs, input_dir=out / "input", output_dir=out / "output",
                      temp_dir=out / "temp", settings=settings)
    config = ServerConfig(folders=folders, data_dir=out / f"data-{concurrency}-{clients}", concurrency=concurrency,
                          max_batch=max_batch)
    runner = web.AppRunner(create_app(config), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    latencies: list[float] = []
    images: dict[int, np.ndarray] = {}
    async with ClientSession() as session:
        # Warm-up (not timed): loads the model so neither mode pays for the first read.
        await one_client(session, base, checkpoint, "warm", [10_000], steps, [], {})

        async def client(index: int) -> None:
            seeds = [index * 1000 + i for i in range(prompts)]
            await one_client(session, base, checkpoint, f"c{index}", seeds, steps, latencies, images)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    await runner.cleanup()
    return elapsed, latencies, images


async def one_client(session: ClientSession, base: str, checkpoint: str, name: str, seeds: list[int], steps: int,
                     latencies: list[float], images: dict[int, np.ndarray]) -> None:
    async with session.ws_connect(f"{base}/ws?clientId={name}") as ws:
        for seed in seeds:
            prompt = workflow(checkpoint, TEXTS[seed % len(TEXTS)], seed, steps, f"{name}_{seed}", SETTINGS["size"])
            sent = time.perf_counter()
            async with session.post(f"{base}/api/prompt", json={"prompt": prompt, "client_id": name}) as response:
                assert response.status == 200, await response.text()
                prompt_id = (await response.json())["prompt_id"]
            output = None
            while True:
                msg = await ws.receive()
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data["type"] == "executed" and data["data"]["prompt_id"] == prompt_id:
                    output = data["data"]["output"]["images"][0]
                if data["type"] == "execution_error":
                    raise RuntimeError(data["data"]["exception_message"])
                if data["type"] == "executing" and data["data"]["node"] is None and \
                        data["data"]["prompt_id"] == prompt_id:
                    break
            latencies.append(time.perf_counter() - sent)
            async with session.get(f"{base}/api/view", params={k: output[k] for k in
                                                                 ("filename", "subfolder", "type")}) as response:
                images[seed] = np.asarray(Image.open(io.BytesIO(await response.read())).convert("RGB"), np.int16)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("demo", *REAL_SIZE), default="demo")
    parser.add_argument("--size", type=int, default=64, help="image width and height (default: 64)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    parser.add_argument("--precision", default="auto", help="auto (default), fp32, fp16, bf16")
    parser.add_argument("--clients", default="1,2,4,8,16", help="client counts, comma-separated")
    parser.add_argument("--prompts", type=int, default=2, help="prompts each client sends (default: 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=32, help="rows per shared UNet forward (default: 32)")
    args = parser.parse_args()
    SETTINGS.update(device=args.device, precision=args.precision, size=args.size)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.model == "demo":
            models_dirs, checkpoint = default_models_dirs(), DEMO_CHECKPOINT
        else:
            print(f"writing the {args.model} checkpoint (random weights) ...", flush=True)
            checkpoint = write_real_size_checkpoint(out / "models", args.model)
            models_dirs = [out / "models"]
        print(f"model: {args.model} ({checkpoint}), {args.size}x{args.size} on {args.device}, {args.steps} steps, cfg 7, euler; "
              f"{args.prompts} prompts per client; --max-batch {args.max_batch}; torch threads: "
              f"{__import__('torch').get_num_threads()}")
        print("clients | one at a time: prompts/s  p50 s  p95 s | concurrency N: prompts/s  p50 s  p95 s | "
              "ratio | max pixel diff")
        for clients in [int(c) for c in args.clients.split(",")]:
            total = clients * args.prompts
            t1, lat1, img1 = asyncio.run(run_clients(models_dirs, out / f"one{clients}", checkpoint, clients,
                                                     args.prompts, args.steps, 1, args.max_batch))
            concurrency = min(clients, 16)
            tn, latn, imgn = asyncio.run(run_clients(models_dirs, out / f"many{clients}", checkpoint, clients,
                                                     args.prompts, args.steps, concurrency, args.max_batch))
            diff = max(int(np.abs(img1[s] - imgn[s]).max()) for s in img1)
            print(f"{clients:7d} | {total / t1:24.2f}  {percentile(lat1, 50):5.2f}  {percentile(lat1, 95):5.2f} | "
                  f"{total / tn:24.2f}  {percentile(latn, 50):5.2f}  {percentile(latn, 95):5.2f} | "
                  f"{t1 / tn:5.2f} | {diff}", flush=True)


if __name__ == "__main__":
    main()
