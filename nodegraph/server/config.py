"""What one server runs with: address, folders, data dir, limits, cache policy, access token."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

from ..engine import Folders

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
MIN_TOKEN_LENGTH = 16  # 16 characters of secrets.token_urlsafe are 96 bits; shorter tokens can be guessed
TOKEN_ENV = "NODEGRAPH_AUTH_TOKEN"  # where `serve` reads a token from, so it never shows in the process list


def normal_origin(origin: str) -> str:
    """`scheme://host:port` in lower case with the default port made explicit, for comparing origins."""
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower() or "http"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{scheme}://{(parts.hostname or '').lower()}:{port or {'http': 80, 'https': 443}.get(scheme)}"


def token_problem(token: str | None) -> str | None:
    """Why an access token is unusable (empty, short, spaces or control characters), else None."""
    if token is None:
        return None
    if any(c.isspace() or not c.isprintable() for c in token):
        return "an access token must not contain spaces or control characters"
    if len(token) < MIN_TOKEN_LENGTH:
        return (f"an access token must be at least {MIN_TOKEN_LENGTH} characters (got {len(token)}); leave it out to "
                "have one generated, or make one with: python -c \"import secrets; print(secrets.token_urlsafe(24))\"")
    return None


def is_loopback(host: str) -> bool:
    """True for localhost names and loopback addresses (127.0.0.0/8, ::1), bracketed or not."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    folders: Folders = field(default_factory=Folders)
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8188
    auth_token: str | None = None  # required on every route when set (always set when listening beyond loopback)
    announce_token: bool = True  # print the token at start-up (only one the server generated, from the CLI)
    # Origins (scheme://host[:port]) whose pages may call the server cross-origin (`--allow-origin`).
    allowed_origins: list[str] = field(default_factory=list)
    max_prompt_size_mb: float = 16.0  # largest stored workflow (JSON of prompt + extra_data)
    max_output_size_mb: float = 1.0  # largest UI output of one node (what goes to the history and the websocket)
    max_image_pixels: int | None = None  # pixel x frame budget of one decode; None: the engine's default
    history_page: int = 200  # entries GET /history returns when the client gives no max_items
    max_upload_size_mb: float = 100.0
    cache: str = "lru"  # "lru" | "none"
    cache_entries: int = 512
    max_history: int = 10000
    preview_size: int = 512
    # Live previews when a prompt does not ask (extra_data.preview_method): ComfyUI's names and default, "none"
    # (no binary preview frames), "auto" / "latent2rgb" (latent -> RGB factors) or "taesd" (TAESD decoder).
    preview_method: str = "none"
    web_root: Path | None = None  # None: the project's web/ folder
    workflows_dir: Path | None = None  # example workflows for the editor; None: the project's workflows/ folder
    registry: Any = None  # a NodeRegistry; None: the default registry (built-in + installed packs)
    # Where prompts run (docs/ray.md): "local" (this process, one at a time) or "ray" (a pool of Ray actors).
    executor: str = "local"
    # Local executor: prompts run side by side (`--concurrency`), their UNet calls batched up to `max_batch` rows.
    concurrency: int = 1
    max_batch: int = 16
    ray_address: str | None = None  # None: start a local Ray instance (or use the one this process started)
    workers: int | None = None  # Ray workers; None: one per GPU in the cluster, one per node without GPUs
    worker_cpus: float = 1.0  # CPUs each Ray worker reserves
    worker_output_dir: Path | None = None  # workers write here and send the files' bytes (no shared filesystem)

    def check(self) -> None:
        """Refuse configurations that would expose the server: a bad token, or no token beyond loopback."""
        problem = token_problem(self.auth_token)
        if problem is not None:
            raise ValueError(problem)
        if not self.loopback_only and not self.auth_token:
            raise ValueError(f"refusing to listen on {self.host} without an access token: anyone on the network "
                             "could run workflows and read files")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size_mb * 1024 * 1024)

    @property
    def allowed_origin_set(self) -> frozenset[str]:
        cached = getattr(self, "_allowed_origin_set", None)
        if cached is None or cached[0] != tuple(self.allowed_origins):
            cached = (tuple(self.allowed_origins), frozenset(normal_origin(o) for o in self.allowed_origins))
            object.__setattr__(self, "_allowed_origin_set", cached)
        return cached[1]

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)

    @property
    def database_path(self) -> Path:
        return Path(self.data_dir) / "nodegraph.sqlite3"

    @property
    def user_dir(self) -> Path:
        return Path(self.data_dir) / "user" / "default"
