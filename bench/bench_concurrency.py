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

The real-size checkpoint (UNet 860M parameters, built from the bundled SD1.5 configs, 4 GB in fp32) is written to a
temporary folder first.
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
REAL_CHECKPOINT = "random-sd15.safetensors"
TEXTS = ["a red circle", "a blue square", "a green triangle", "a yellow circle and a red square"]


def write_real_size_checkpoint(models_root: Path) -> None:
    """SD1.5's architecture from the bundled configs, random weights, as an original-layout single file."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodegraph_nodes.diffusion.families import bundled_config
    from nodegraph_nodes.diffusion.keymap import write_single_file
    from nodegraph_nodes.diffusion.tiny import Components, clip_tokenizer, seeded

    tokenizer = clip_tokenizer(None)
    with seeded(0):
        unet = UNet2DConditionModel.from_config(bundled_config("sd15", "unet")).eval()
        vae = AutoencoderKL.from_config(bundled_config("sd15", "vae")).eval()
        text = CLIPTextModel(CLIPTextConfig(**bundled_config("sd15", "text_encoder"))).eval()
    components = Components("sd1", unet, vae, [text], [tokenizer], bundled_config("sd15", "scheduler"))
    (models_root / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_single_file(components, models_root / "checkpoints" / REAL_CHECKPOINT)


def workflow(checkpoint: str, text: str, seed: int, steps: int, prefix: str) -> dict:
    prompt = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    prompt["4"]["inputs"]["ckpt_name"] = checkpoint
    prompt["6"]["inputs"]["text"] = text
    prompt["3"]["inputs"].update(seed=seed, steps=steps)
    prompt["9"]["inputs"]["filename_prefix"] = prefix
    return prompt


async def run_clients(models_dirs: list[Path], out: Path, checkpoint: str, clients: int, prompts: int, steps: int,
                      concurrency: int, max_batch: int) -> tuple[float, list[float], dict[int, np.ndarray]]:
    """(seconds for all prompts, latencies, seed -> image) for `clients` clients against one fresh server."""
    settings = {"device": "cpu"} | ({"max_batch": max_batch} if concurrency > 1 else {})
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
            prompt = workflow(checkpoint, TEXTS[seed % len(TEXTS)], seed, steps, f"{name}_{seed}")
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
    parser.add_argument("--model", choices=("demo", "real-size"), default="demo")
    parser.add_argument("--clients", default="1,2,4,8,16", help="client counts, comma-separated")
    parser.add_argument("--prompts", type=int, default=2, help="prompts each client sends (default: 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=32, help="rows per shared UNet forward (default: 32)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.model == "demo":
            models_dirs, checkpoint = default_models_dirs(), DEMO_CHECKPOINT
        else:
            print("writing the real-size SD1.5 checkpoint (random weights) ...", flush=True)
            write_real_size_checkpoint(out / "models")
            models_dirs, checkpoint = [out / "models"], REAL_CHECKPOINT
        print(f"model: {args.model} ({checkpoint}), 64x64, {args.steps} steps, cfg 7, euler; "
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
