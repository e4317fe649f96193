"""A generated-request fuzzer against a real `nodegraph serve` on 127.0.0.1 (issue 17, "Must show").

Requests on every route (odd methods, paths, query strings, headers, bodies, multipart uploads) and workflows
(random graphs of the built-in nodes with hostile literals and links, plus the known attacks: integer towers, string
doubling, long chains, long cycles, image bombs) are generated from a seed. Every answer must be below 500 and the
server must still answer at the end. The default run sends a fast subset (`FAST_CASES`); the full run, at least
10,000 cases, is marked `fuzz`:

    python -m pytest tests/test_hardening_fuzz.py -m fuzz -s      # NODEGRAPH_FUZZ_CASES=20000 for more
"""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import time
import urllib.parse
from collections import Counter
from typing import Any

import pytest

from nodegraph.server.app import ROUTES
from support.hostile import gif_frames, png_bomb
from support.server import ServeProcess
from support.workflows import chain, cycle, power_tower, string_doubling

FAST_CASES = 400
FULL_CASES = int(os.environ.get("NODEGRAPH_FUZZ_CASES", "10000"))

NODE_TYPES = ["PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveBoolean", "IntMath", "FloatMath",
              "IntToFloat", "FloatToInt", "StringFormat", "StringConcat", "ToString", "ShowText", "Sleep",
              "LoadImage", "SaveImage", "PreviewImage", "ImageScale", "EmptyLatentImage", "KSampler",
              "CheckpointLoaderSimple", "VAEDecode", "CLIPTextEncode", "RegexMatch", "RegexReplace", "RegexExtract",
              "EmptyImage", "RepeatImageBatch", "ImageScaleBy", "PreviewAny", "StringConcatenate", "StringReplace",
              "StringSubstring", "LoadLatent", "SaveLatent", "ImageStitch", "Nope", ""]
INPUTS = ["value", "a", "b", "op", "seconds", "template", "image", "images", "width", "height", "batch_size",
          "first", "second", "separator", "filename_prefix", "mode", "text", "ckpt_name", "seed", "steps",
          "upscale_method", "crop", "samples", "vae", "clip", "string", "regex_pattern", "replace", "amount",
          "scale_by", "color", "source", "string_a", "string_b", "find", "start", "end", "latent"]
NASTY_TEXT = ["", "x", "../../etc/passwd", "/etc/passwd", "a\nb", "\x00", "\x07bell", "bomb12k.png", "bomb30k.png",
              "frames.gif", "small.png", "n" * 300, "{a}{b}{c}", "{0}", "{a.__class__}", "{a:>99999999}", "{a:{b}}",
              "power", "multiply", "ünï©ødé", "\ud800"[:0] + "💥", "x" * 5000, "x [output]", "a/b/c", "\\\\server"]
NUMBERS = [0, 1, -1, 7, 1024, 2**31, 2**63 - 1, -2**63, 2**64, 10**30, 10**400, 0.5, -0.0, 1e308, -1e308, 3.14159]


def nasty_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(NUMBERS)
    if roll < 0.6:
        return rng.choice(NASTY_TEXT)
    if roll < 0.7:
        return rng.choice([True, False, None])
    if roll < 0.8 and depth < 3:
        return [nasty_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if roll < 0.9 and depth < 3:
        return {rng.choice(INPUTS + ["__value__"]): nasty_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(["1", "2", 1, "9999"])


def random_workflow(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.04:
        return power_tower(rng.randint(1, 4))
    if roll < 0.08:
        return string_doubling(rng.randint(5, 24))
    if roll < 0.10:
        return chain(rng.randint(3, 800))
    if roll < 0.12:
        return cycle(rng.randint(1, 3000))
    if roll < 0.14:
        return nasty_value(rng)  # not even an object
    n = rng.randint(1, 12)
    ids = [str(i) for i in range(1, n + 1)]
    prompt: dict[str, Any] = {}
    for nid in ids:
        inputs: dict[str, Any] = {}
        for _ in range(rng.randint(0, 5)):
            name = rng.choice(INPUTS)
            if rng.random() < 0.4:
                inputs[name] = [rng.choice(ids + ["0", "x", 5]), rng.choice([0, 0, 0, 1, 2, -1, "0"])]
            else:
                inputs[name] = nasty_value(rng)
        if rng.random() < 0.05:
            inputs = nasty_value(rng)
        node: Any = {"class_type": rng.choice(NODE_TYPES), "inputs": inputs}
        if rng.random() < 0.05:
            node = nasty_value(rng)
        if isinstance(node, dict) and rng.random() < 0.2:
            node["_meta"] = {"title": rng.choice(NASTY_TEXT)}
        prompt[nid] = node
    if rng.random() < 0.5:  # give most workflows an output so that they get past the first check
        prompt["out"] = {"class_type": "ShowText", "inputs": {"value": [rng.choice(ids), 0]}}
    return prompt


def _segment(rng: random.Random) -> str:
    return urllib.parse.quote(rng.choice(NASTY_TEXT + ["default", "comfy.settings.json", "checkpoints", "IntMath",
                                                       "txt2img", "x.json"]), safe="")


def random_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    method, path, _ = rng.choice(ROUTES)
    if rng.random() < 0.15:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    path = re.sub(r"\{[^}]+\}", lambda _m: _segment(rng), path)
    path = rng.choice(["", "/api"]) + path
    if rng.random() < 0.05:
        path = "/" + "/".join(_segment(rng) for _ in range(rng.randint(1, 4)))
    query = {rng.choice(["filename", "subfolder", "type", "channel", "preview", "max_items", "offset", "dir",
                         "recurse", "path", "status", "limit", "sort_by", "token", "clientId", "full_info"]):
             str(nasty_value(rng))[:400] for _ in range(rng.randint(0, 4))}
    if query:
        path += "?" + urllib.parse.urlencode(query)
    headers: dict[str, str] = {}
    if rng.random() < 0.2:
        headers["Origin"] = rng.choice(["http://evil.example", "null", "http://127.0.0.1:1", "file://"])
    if rng.random() < 0.1:
        headers["Sec-Fetch-Site"] = rng.choice(["cross-site", "same-site", "same-origin", "none"])
    if rng.random() < 0.1:
        headers["Authorization"] = rng.choice(["Bearer ", "Bearer x", "Basic Zm9vOmJhcg==", "garbage"])
    body = b""
    roll = rng.random()
    if method in ("POST", "PUT", "PATCH") and roll < 0.7:
        if "upload" in path and rng.random() < 0.7:
            boundary = "fuzzboundary"
            name = str(rng.choice(NASTY_TEXT + ["a.png", "mask.png"]))
            content = rng.choice([b"", b"\x89PNG\r\n", os.urandom(64), BOMB_BYTES])
            fields = [(f'name="image"; filename="{name}"', content)]
            for field in ("subfolder", "type", "overwrite", "original_ref"):
                if rng.random() < 0.5:
                    value = json.dumps({"filename": rng.choice(["bomb12k.png", "small.png", "x"]), "type": "input"}) \
                        if field == "original_ref" else str(nasty_value(rng))
                    fields.append((f'name="{field}"', value.encode("utf-8", "replace")))
            body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode()
                            + data + b"\r\n" for disposition, data in fields) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        else:
            body = json.dumps(nasty_value(rng)).encode() if rng.random() < 0.8 else os.urandom(rng.randint(0, 200))
            headers["Content-Type"] = rng.choice(["application/json", "text/plain", "multipart/form-data"])
    return method, path, headers, body


BOMB_BYTES = b""


class Fuzzer:
    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body or None, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt:
                    raise
        self.statuses[response.status] += 1
        if response.status >= 500:
            self.failures.append(f"{response.status} {method} {path[:200]} {body[:200]!r} -> {data[:300]!r}")
        return response.status


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory):
    global BOMB_BYTES
    base = tmp_path_factory.mktemp("fuzz")
    (base / "input").mkdir()
    png_bomb(base / "input" / "bomb12k.png", 12000, 12000)
    png_bomb(base / "input" / "bomb30k.png", 30000, 30000, complete=False)
    gif_frames(base / "input" / "frames.gif", 300, 50)
    from PIL import Image

    Image.new("RGBA", (16, 16), (1, 2, 3, 4)).save(base / "input" / "small.png")
    BOMB_BYTES = (base / "input" / "bomb12k.png").read_bytes()
    served = ServeProcess(base, "--models-dir", str(base / "models"), "--max-image-pixels", "16000000",
                          "--max-history", "500")
    proc, url, lines = served.proc, served.url, served.lines
    yield proc, url, lines
    proc.kill()
    proc.wait()


def fuzz(fuzz_server: Any, cases: int, seed: int) -> None:
    proc, url, lines = fuzz_server
    rng = random.Random(seed)
    fuzzer = Fuzzer(url)
    kinds: Counter[str] = Counter()
    started = time.monotonic()
    for index in range(cases):
        if index % 40 == 39:  # keep the queue short: whatever hostile prompt runs is stopped and the rest dropped
            fuzzer.send("POST", "/api/queue", {"Content-Type": "application/json"}, b'{"clear": true}')
            fuzzer.send("POST", "/api/interrupt", {}, b"")
        if rng.random() < 0.45:
            kinds["workflow"] += 1
            body = {"prompt": random_workflow(rng)}
            if rng.random() < 0.2:
                body.update({k: nasty_value(rng) for k in rng.sample(["number", "front", "prompt_id", "client_id",
                                                                        "extra_data"], rng.randint(1, 3))})
            payload = json.dumps(body).encode()
            fuzzer.send("POST", rng.choice(["/prompt", "/api/prompt"]), {"Content-Type": "application/json"},
                        payload)
        else:
            kinds["request"] += 1
            fuzzer.send(*random_request(rng))
        assert proc.poll() is None, "the server died:\n" + "".join(lines[-50:])
    fuzzer.send("POST", "/api/interrupt", {}, b"")
    status = fuzzer.send("GET", "/api/system_stats", {}, b"")
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {cases} cases ({dict(kinds)}) in {elapsed:.0f} s; statuses {dict(sorted(fuzzer.statuses.items()))}")
    assert not fuzzer.failures, "\n".join(fuzzer.failures[:20])
    assert status == 200 and proc.poll() is None
    assert sum(fuzzer.statuses.values()) >= cases


def test_fuzz_fast_subset(fuzz_server):
    fuzz(fuzz_server, FAST_CASES, seed=17)


@pytest.mark.fuzz
def test_fuzz_full(fuzz_server):
    fuzz(fuzz_server, max(FULL_CASES, 10_000), seed=1717)
