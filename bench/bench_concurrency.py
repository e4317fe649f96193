"""Benchmark: prompts per second with 1..16 clients, one prompt at a time vs `--concurrency` with batched UNet calls.

Two servers run side by side, each `nodegraph serve` in a process of its own, as a user starts it: one that runs
prompts one at a time (ComfyUI's way, nodegraph's default) and one with `--concurrency N --max-batch ROWS` (N:
`--concurrency`, by default the largest client count, at most 16; the same server for every row, as a deployed
server has, so the 1-client row shows what the batching machinery costs a lone prompt). The clients run in this
process and reach the servers over loopback only. Each client holds its own websocket and sends txt2img prompts one
after another (its next prompt when the last one finished), each with a seed of its own; the same clients and
seeds go to one server, then to the other. Printed per client count: prompts per second of each, their ratio,
latency p50 / p95 of each, the largest pixel difference between the two runs' images of the same seed (a prompt
gives the same image batched as alone), and the mean rows per UNet forward of the concurrent server. With
`--rounds R` the two servers take turns R times per client count (on a shared, noisy machine a burst of outside
load then hits both alike); the figures are over all rounds, and the ratio's spread over the rounds is printed
beside it.

    python bench/bench_concurrency.py                       # the shipped demo SD1 (64x64, 20 steps)
    python bench/bench_concurrency.py --model real-size     # SD1.5's architecture, random weights, 64x64
    python bench/bench_concurrency.py --clients 1,2,4,8,16 --prompts 3 --steps 20 --rounds 3
    python bench/bench_concurrency.py --model real-size --prompts 1 --steps 4   # ~5 min on a 2-core CPU
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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes")]

import numpy as np  # noqa: E402
from aiohttp import ClientSession, WSMsgType  # noqa: E402
from PIL import Image  # noqa: E402


DEMO_CHECKPOINT = "nodegraph-demo-sd1.safetensors"
SETTINGS = {"device": "cpu", "precision": "auto", "size": 64}  # from the command line
TEXTS = ["a red circle", "a blue square", "a green triangle", "a yellow circle and a red square"]


# --model -> (family, bundled config folder, checkpoint file name)
REAL_SIZE = {"real-size": ("sd1", "sd15", "random-sd15.safetensors"),
             "real-size-sdxl": ("sdxl", "sdxl_base", "random-sdxl.safetensors")}


def write_real_size_checkpoint(models_root: Path, model: str, half: bool = False) -> str:
    """The architecture of SD1.5 or SDXL base from the bundled configs, random weights, as an original-layout single
    file (in fp16 with `half`: half the size and write time, for an fp16 run); returns its name."""
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
    if half:
        for module in (unet, vae, *encoders):
            module.half()
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


class Server:
    """`nodegraph serve` in a process of its own, as a user starts it: the clients (this process) reach it over
    loopback only, so their own work (JSON, HTTP, PNG decoding) does not take the server's GIL, as remote clients'
    would not."""

    def __init__(self, folder: Path, concurrency: int, max_batch: int, models_dir: Path | None):
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:  # a free port on loopback
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "nodegraph", "serve", "--port", str(self.port),
                   "--data-dir", str(folder / "data"), "--output-dir", str(folder / "output"),
                   "--input-dir", str(folder / "input"), "--temp-dir", str(folder / "temp"),
                   "--device", SETTINGS["device"], "--precision", SETTINGS["precision"]]
        if concurrency > 1:
            command += ["--concurrency", str(concurrency), "--max-batch", str(max_batch)]
        if models_dir is not None:
            command += ["--models-dir", str(models_dir)]
        self.log = folder / "server.log"
        # this checkout's code, as the bench's own imports (whether or not it is the installed one)
        path = os.pathsep.join([str(ROOT), str(ROOT / "nodes"), *filter(None, [os.environ.get("PYTHONPATH")])])
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONPATH": path})

    async def ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        async with ClientSession() as session:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
                try:
                    async with session.get(f"{self.base}/system_stats") as response:
                        if response.status == 200:
                            return
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start in {timeout:.0f} s")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def warm_up(server: Server, checkpoint: str, steps: int) -> None:
    """Wait for the server and load the model (one prompt, not timed), so that no timed run pays for the read."""
    await server.ready()
    async with ClientSession() as session:
        await one_client(session, server.base, checkpoint, "warm", [10_000_000], steps, [], {})


async def run_clients(server: Server, checkpoint: str, clients: int, prompts: int, steps: int,
                      first_seed: int) -> tuple[float, list[float], dict[int, np.ndarray], float]:
    """(seconds for all prompts, latencies, seed -> image, mean rows per UNet forward) for `clients` clients, each
    sending `prompts` prompts one after another. Seeds start at `first_seed` (new seeds for each run, so that the
    server's output cache, which lives across runs, answers none of them)."""
    latencies: list[float] = []
    images: dict[int, np.ndarray] = {}
    async with ClientSession() as session:
        async def client(index: int) -> None:
            seeds = [first_seed + index * 1000 + i for i in range(prompts)]
            await one_client(session, server.base, checkpoint, f"c{index}", seeds, steps, latencies, images)

        before = await batching_counters(session, server.base)
        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
        after = await batching_counters(session, server.base)
    forwards = after["forwards"] - before["forwards"]
    rows = (after["rows"] - before["rows"]) / forwards if forwards else 0.0  # 0: no batcher (one at a time)
    return elapsed, latencies, images, rows


async def batching_counters(session: ClientSession, base: str) -> dict[str, int]:
    """The server's totals of shared-forward batching, as /system_stats publishes them."""
    async with session.get(f"{base}/system_stats") as response:
        stats = await response.json()
    models = stats["nodegraph"]["resources"].get("models", {})
    return models.get("batching", {"forwards": 0, "rows": 0})


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    parser.add_argument("--precision", default="auto", help="auto (default), fp32, fp16, bf16")
    parser.add_argument("--clients", default="1,2,4,8,16", help="client counts, comma-separated")
    parser.add_argument("--prompts", type=int, default=2, help="prompts each client sends (default: 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=32, help="rows per shared UNet forward (default: 32)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two modes this many times (default: 1)")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="the concurrent server's --concurrency (default: the largest client count, at most 16)")


def measure_row(one: Server, many: Server, checkpoint: str, clients: int, args: argparse.Namespace) -> dict:
    """One row of the table: the two servers take turns (`--rounds` times), each with the same clients and seeds."""
    total = clients * args.prompts
    t1 = tn = 0.0
    lat1: list[float] = []
    latn: list[float] = []
    ratios: list[float] = []
    diff, rows = 0, []
    for r in range(args.rounds):
        first_seed = (r * 100 + clients) * 100_000
        once = asyncio.run(run_clients(one, checkpoint, clients, args.prompts, args.steps, first_seed))
        batched = asyncio.run(run_clients(many, checkpoint, clients, args.prompts, args.steps, first_seed))
        t1, tn = t1 + once[0], tn + batched[0]
        lat1 += once[1]
        latn += batched[1]
        ratios.append(once[0] / batched[0])
        diff = max(diff, *(int(np.abs(once[2][seed] - batched[2][seed]).max()) for seed in once[2]))
        rows.append(batched[3])
    row = {"clients": clients, "one_per_s": total * args.rounds / t1, "many_per_s": total * args.rounds / tn,
           "ratio": t1 / tn, "ratio_min": min(ratios), "ratio_max": max(ratios),
           "one_p50": percentile(lat1, 50), "one_p95": percentile(lat1, 95),
           "many_p50": percentile(latn, 50), "many_p95": percentile(latn, 95),
           "max_pixel_diff": diff, "rows_per_forward": sum(rows) / len(rows)}
    spread = f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f})" if len(ratios) > 1 else ""
    print(f"{clients:7d} | {row['one_per_s']:24.2f}  {row['one_p50']:5.2f}  {row['one_p95']:5.2f} | "
          f"{row['many_per_s']:24.2f}  {row['many_p50']:5.2f}  {row['many_p95']:5.2f} | "
          f"{row['ratio']:5.2f} {spread:11s} | {diff:14d} | {row['rows_per_forward']:.1f}", flush=True)
    return row


def run_table(model: str, size: int, args: argparse.Namespace, models_root: Path | None = None) -> list[dict]:
    """Print (and return) the table for one model and image size. Real-size checkpoints are written under
    `models_root` (kept for the next call) or a temporary folder."""
    SETTINGS.update(device=args.device, precision=args.precision, size=size)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        models_dir = None  # the demo models ship with nodegraph: the server finds them by itself
        if model == "demo":
            checkpoint = DEMO_CHECKPOINT
        else:
            root = models_root or out / "models"
            checkpoint = REAL_SIZE[model][2]
            if not (root / "checkpoints" / checkpoint).exists():
                print(f"writing the {model} checkpoint (random weights) ...", flush=True)
                write_real_size_checkpoint(root, model, half=args.precision == "fp16")
            models_dir = root
        counts = [int(c) for c in args.clients.split(",")]
        concurrency = args.concurrency or min(max(counts), 16)
        servers = (Server(out / "one", 1, args.max_batch, models_dir),
                   Server(out / "many", concurrency, args.max_batch, models_dir))
        try:
            for server in servers:
                asyncio.run(warm_up(server, checkpoint, args.steps))
            print(f"model: {model} ({checkpoint}), {size}x{size} on {args.device}, {args.steps} steps, cfg 7, euler; "
                  f"{args.prompts} prompts per client; --concurrency {concurrency} --max-batch {args.max_batch}; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
            print("clients | one at a time: prompts/s  p50 s  p95 s | concurrency N: prompts/s  p50 s  p95 s | "
                  "ratio (rounds) | max pixel diff | rows/forward", flush=True)
            for clients in counts:
                table.append(measure_row(*servers, checkpoint, clients, args))
        finally:
            for server in servers:
                server.stop()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("demo", *REAL_SIZE), default="demo")
    parser.add_argument("--size", type=int, default=64, help="image width and height (default: 64)")
    add_arguments(parser)
    args = parser.parse_args()
    run_table(args.model, args.size, args)


if __name__ == "__main__":
    main()
