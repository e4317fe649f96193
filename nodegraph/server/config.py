"""What one server runs with: address, folders, data dir, limits, cache policy, access token."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Folders

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


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
    ray_address: str | None = None  # None: start a local Ray instance (or use the one this process started)
    workers: int | None = None  # Ray workers; None: one per GPU in the cluster, one per node without GPUs
    worker_cpus: float = 1.0  # CPUs each Ray worker reserves
    worker_output_dir: Path | None = None  # workers write here and send the files' bytes (no shared filesystem)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size_mb * 1024 * 1024)

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)

    @property
    def database_path(self) -> Path:
        return Path(self.data_dir) / "nodegraph.sqlite3"

    @property
    def user_dir(self) -> Path:
        return Path(self.data_dir) / "user" / "default"
