"""First-image latency of `nodegraph serve`: cold (the first prompt after start) and warm, with and without the
background import of torch, diffusers and transformers that `serve` starts as soon as it listens.

    python bench/bench_first_image.py [--rounds 1] [--think 10]

Each round starts `python -m nodegraph serve --port 0` twice in fresh temporary folders: "before" with
NODEGRAPH_WARMUP=0 (the libraries are imported by the first prompt's Load Checkpoint, as before the warm-up
existed) and "after" (the default). On each server it queues the txt2img example (the SD1 demo model, 64 px) in
two ways:

* cold, right away: posted the moment the server announces it listens (a script); the latency is from the
  `serve` process's start to the image being in the history;
* cold, after `--think` seconds: posted as a user would after opening the editor; the latency is from the POST;
* warm: a second prompt (another seed, so the sampler runs again) on the same server, from its POST.

The cold cases need a fresh server each; every server is stopped with SIGINT, and its exit time is printed too.
Prints the medians and the ratios after / before (below 1: faster). The machine's load moves the absolute figures
a lot; both variants run alternately in the same process so the ratios stay comparable.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes"), str(ROOT / "tests")]

from support.server import ServeProcess  # noqa: E402

WORKFLOW = json.loads((ROOT / "workflows" / "txt2img.json").read_text())


class Server:
    def __init__(self, base: Path, warmup: bool):
        self.started = time.perf_counter()
        served = ServeProcess(base, env={"NODEGRAPH_WARMUP": "1" if warmup else "0"})
        self.proc, self.url = served.proc, served.url
        self.listening = time.perf_counter()

    def image(self, seed: int) -> tuple[float, dict[str, float]]:
        """Queue txt2img with this seed; (the moment its image is in the history, its timings)."""
        prompt = json.loads(json.dumps(WORKFLOW))
        prompt["3"]["inputs"]["seed"] = seed
        request = urllib.request.Request(self.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        prompt_id = json.load(urllib.request.urlopen(request))["prompt_id"]
        while True:
            entry = json.load(urllib.request.urlopen(f"{self.url}/history/{prompt_id}")).get(prompt_id)
            if entry and entry["status"]["status_str"]:
                if entry["status"]["status_str"] != "success":
                    raise RuntimeError(f"prompt failed: {entry['status']}")
                return time.perf_counter(), entry["timings"]
            time.sleep(0.02)

    def stop(self) -> float:
        began = time.perf_counter()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()
        return time.perf_counter() - began


def one_server(warmup: bool, think: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), warmup)
        if think:
            time.sleep(think)
        posted = time.perf_counter()
        done, timings = server.image(seed=1)
        result = {"listen": server.listening - server.started, "from_start": done - server.started,
                  "from_post": done - posted, "load_checkpoint": timings["4"], "imports": timings.get("imports", 0.0)}
        posted = time.perf_counter()
        done, _ = server.image(seed=2)
        result["warm"] = done - posted
        result["exit"] = server.stop()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--think", type=float, default=10.0,
                        help="seconds between listening and the first prompt in the 'user' case (default 10)")
    args = parser.parse_args()
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for case, think in (("right away", 0.0), (f"after {args.think:g} s", args.think)):
            for variant, warmup in (("before", False), ("after", True)):
                runs.setdefault((case, variant), []).append(one_server(warmup, think))
                print(f"  {case:>12} {variant:>6}: " + ", ".join(
                    f"{k} {v:.2f}s" for k, v in runs[(case, variant)][-1].items()), flush=True)

    def median(case: str, variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[(case, variant)])

    print(f"\nmedians of {args.rounds} round(s); before = import on the first prompt (NODEGRAPH_WARMUP=0), "
          "after = imported in the background once listening")
    print(f"{'first prompt posted':>20} {'metric':>34} {'before':>8} {'after':>8} {'after/before':>12}")
    rows = [
        ("right away", "from_start", "first image, from `serve` start"),
        (f"after {args.think:g} s", "from_post", "first image, from its POST"),
        (f"after {args.think:g} s", "load_checkpoint", "Load Checkpoint's own time"),
        ("right away", "warm", "warm server, from POST"),
    ]
    for case, key, label in rows:
        before, after = median(case, "before", key), median(case, "after", key)
        print(f"{case:>20} {label:>34} {before:>7.2f}s {after:>7.2f}s {after / before:>12.2f}")
    exits = [r["exit"] for variant in runs.values() for r in variant]
    print(f"exit after SIGINT (every server): median {statistics.median(exits):.2f}s, max {max(exits):.2f}s")


if __name__ == "__main__":
    main()
