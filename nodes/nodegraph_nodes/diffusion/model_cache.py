"""The model cache: every loaded model component, shared across prompts, under RAM and VRAM budgets.

Keys are (file identity, component): a file's identity is its resolved path, size and modification time, so a
checkpoint used by two prompts, or by two loader nodes in one prompt, is read from disk once, and a file replaced
on disk is read again. One read of a checkpoint fills the entries of all its components (UNet, CLIP, VAE).

Placement: components live on the compute device (`device`) while nodes use them. Before a component moves there,
least-recently-used components that are not in use move back to the CPU until the VRAM budget holds; when the
RAM budget is exceeded, least-recently-used components that are not in use are dropped entirely (and read again
from disk if needed later). A component in use by a running node is never moved or dropped under it.

Nodes never hold modules between runs: the MODEL / CLIP / VAE values that flow through a workflow (and sit in the
output cache) are small handles, and `ModelCache.use(handle)` yields the module for the duration of one node.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileIdentity:
    """Which bytes a model came from: resolved path, size and mtime (for a folder, over all its files)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> "FileIdentity":
        real = Path(os.path.realpath(path))
        if real.is_dir():
            files = [p for p in real.rglob("*") if p.is_file()]
            return cls(str(real), sum(p.stat().st_size for p in files), max((p.stat().st_mtime_ns for p in files), default=0))
        stat = real.stat()
        return cls(str(real), stat.st_size, stat.st_mtime_ns)

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class ModelRef:
    """A handle to one component of one file. `loader` names how the file is read (see ModelCache.loaders)."""

    source: FileIdentity
    component: str
    loader: str

    @property
    def key(self) -> tuple[FileIdentity, str]:
        return (self.source, self.component)

    def cache_nbytes(self) -> int:
        return 0  # the weights belong to the model cache, not to the output cache holding this handle


@dataclass
class _Entry:
    ref: ModelRef
    value: Any  # an nn.Module, or a tuple/list of them with their tokenizers
    nbytes: int
    device: torch.device
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    # made on first use when max_batch > 1: a UNet's batching.UNetBatcher, a VAE's decode_batching.DecodeBatcher
    batcher: Any = None


def module_nbytes(value: Any) -> int:
    """Bytes of the parameters and buffers of a module or of the modules inside a list / tuple / dict."""
    if isinstance(value, torch.nn.Module):
        return sum(t.element_size() * t.nelement() for t in (*value.parameters(), *value.buffers()))
    if isinstance(value, (list, tuple)):
        return sum(module_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(module_nbytes(v) for v in value.values())
    return 0


def _move(value: Any, device: torch.device, dtype: torch.dtype | None) -> None:
    if isinstance(value, torch.nn.Module):
        current = next(value.parameters(), None)
        if current is None:
            return
        if dtype is None or not current.is_floating_point() or current.dtype == dtype:
            dtype = None  # only cast when needed: diffusers warns on every dtype cast of a loaded model
        if dtype is not None:
            _cast(value, device, dtype)
        elif current.device != device:
            value.to(device=device)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _move(v, device, dtype)
    elif isinstance(value, dict):
        for v in value.values():
            _move(v, device, dtype)


def _cast(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move and cast a model. diffusers' ModelMixin.to() warns on every dtype cast that some modules "should be kept
    in float32", listing them, and prints the warning with an empty list too (every UNet and VAE: nothing to keep).
    With nothing to keep, cast with torch's own Module.to; a model that does keep modules in float32 goes through
    diffusers' to() and its warning, which then says something."""
    if getattr(module, "_keep_in_fp32_modules", None):
        module.to(device=device, dtype=dtype)
    else:
        torch.nn.Module.to(module, device=device, dtype=dtype)


def release_memory() -> None:
    """Return freed memory to the operating system, not only to the allocator (ComfyUI users' top complaint)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the allocator keeps what it keeps


def default_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def default_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """fp32 on the CPU; bf16 on CUDA where supported, else fp16; `precision` overrides."""
    named = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision != "auto":
        return named[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


class ModelCache:
    """Owner of one runtime's loaded model components (its `models` memory owner: cache_readers.model_cache)."""

    name = "models"

    def __init__(
        self,
        device: str | torch.device = "auto",
        precision: str = "auto",
        vram_budget: int | None = None,
        ram_budget: int | None = None,
    ):
        self.device = device if isinstance(device, torch.device) else default_device(device)
        self.dtype = default_dtype(self.device, precision)
        # Keep ~1.5 GiB of the accelerator for activations; on the CPU keep a quarter of free RAM for work.
        on_accelerator = self.device.type != "cpu"
        self.vram_budget = vram_budget if vram_budget is not None else (
            max(0, _available_bytes(self.device) - (3 << 29)) if on_accelerator else 0
        )
        self.ram_budget = ram_budget if ram_budget is not None else int(_available_bytes(torch.device("cpu")) * 0.75)
        self.loaders: dict[str, Callable[[str], dict[str, Any]]] = {}
        self._entries: dict[tuple[FileIdentity, str], _Entry] = {}
        self._lock = threading.RLock()
        self.counters = {"file_reads": 0, "hits": 0, "misses": 0, "offloads": 0, "drops": 0}
        # Rows one UNet forward may hold when prompts sample side by side (`serve --concurrency`); 1: no batching.
        self.max_batch = 1
        # How many prompts run now on the executors that share this cache (set by cache_readers.model_cache from
        # the runtime); 1 when the cache is used on its own.
        self.prompts_running: Callable[[], int] = lambda: 1
        self._compute_lock = threading.RLock()  # see compute()

    def component_dtype(self, component: str) -> torch.dtype:
        """The precision a component runs in: the cache's, except the VAE, which stays fp32 when the rest is fp16
        (the SD / SDXL VAEs overflow to NaN in fp16; bf16 has fp32's range and is kept)."""
        if component == "vae" and self.dtype == torch.float16:
            return torch.float32
        return self.dtype

    # --- loading -------------------------------------------------------------------------------------------------

    def register_loader(self, name: str, fn: Callable[[str], dict[str, Any]]) -> None:
        """`fn(path)` reads a file and returns {component name: module or modules}."""
        self.loaders[name] = fn

    def refs(self, path: str | os.PathLike[str], loader: str, components: tuple[str, ...]) -> dict[str, ModelRef]:
        """Handles for a file's components; nothing is read until a handle is used (or `preload`ed)."""
        identity = FileIdentity.of(path)
        return {c: ModelRef(identity, c, loader) for c in components}

    def preload(self, ref: ModelRef) -> None:
        """Read the file now if the component is not loaded (loader nodes do this so errors surface there)."""
        with self._lock:
            if ref.key not in self._entries:
                self._load_file(ref)
            self._enforce_ram_budget()

    def _load_file(self, ref: ModelRef) -> None:
        started = time.perf_counter()
        parts = self.loaders[ref.loader](ref.source.path)
        self.counters["file_reads"] += 1
        if ref.component not in parts:
            raise KeyError(f"{ref.source.name} has no {ref.component} component (it has {', '.join(parts)})")
        for component, value in parts.items():
            key = (ref.source, component)
            if key in self._entries:
                continue  # keep the loaded one (possibly in use or on the device)
            # On the CPU the components are cast once, here; on an accelerator when they move there.
            _move(value, torch.device("cpu"), self.component_dtype(component) if self.device.type == "cpu" else None)
            self._entries[key] = _Entry(ModelRef(ref.source, component, ref.loader), value, module_nbytes(value),
                                        torch.device("cpu"))
        log.info("loaded %s in %.2fs", ref.source.name, time.perf_counter() - started)

    @contextmanager
    def use(self, ref: ModelRef) -> Iterator[Any]:
        """Yield the component on the compute device, pinned (never evicted) until the block ends."""
        with self._lock:
            entry = self._entries.get(ref.key)
            if entry is None:
                self.counters["misses"] += 1
                self._load_file(ref)
                entry = self._entries[ref.key]
            else:
                self.counters["hits"] += 1
            entry.in_use += 1
            entry.last_used = time.monotonic()
            try:
                self._place(entry)
            except BaseException:
                entry.in_use -= 1
                raise
        try:
            if ref.component == "unet" and self.max_batch > 1:
                with self._batcher(entry).participant() as view:
                    yield view
            else:
                yield entry.value
        finally:
            with self._lock:
                entry.in_use -= 1
                entry.last_used = time.monotonic()
                self._enforce_ram_budget()

    @contextmanager
    def compute(self) -> Iterator[None]:
        """Hold the device's turn for one heavy, self-contained computation (a UNet forward, a VAE pass, a text
        encoding; never anything that waits for another prompt's work).

        On a CPU with prompts running side by side (max_batch > 1) these run one at a time: each already spreads
        over every core with torch's intra-op threads, and two at once only oversubscribe the cores (each team of
        threads waits at its barriers for threads the other team has pushed off a core): measured on 2 cores, a
        VAE decode beside a shared UNet forward made both 3-10x slower than one after the other. An accelerator
        orders its own work, and one prompt at a time has nothing to share the cores with: there it does nothing."""
        if self.max_batch <= 1 or self.device.type != "cpu":
            yield
            return
        with self._compute_lock:
            yield

    def decode_batcher(self, ref: ModelRef) -> Any:
        """The loaded VAE's DecodeBatcher (decode_batching.py) when prompts run side by side (max_batch > 1), else
        None (a decode then runs as it is). Call it inside `use(ref)`."""
        if self.max_batch <= 1:
            return None
        from .decode_batching import DecodeBatcher
        from .memory import vae_decode_rows

        with self._lock:
            entry = self._entries[ref.key]
            if entry.batcher is None or entry.batcher.vae is not entry.value:
                vae = entry.value
                entry.batcher = DecodeBatcher(
                    vae, lambda z: min(self.max_batch, vae_decode_rows(vae, tuple(z.shape))),
                    compute=self.compute)
            return entry.batcher

    def _batcher(self, entry: _Entry) -> Any:
        from .batching import UNetBatcher

        with self._lock:
            if entry.batcher is None or entry.batcher.unet is not entry.value:
                entry.batcher = UNetBatcher(entry.value, self.max_batch, compute=self.compute,
                                            prompts_running=lambda: self.prompts_running())
            entry.batcher.max_batch = self.max_batch
            return entry.batcher

    def _place(self, entry: _Entry) -> None:
        if entry.device == self.device:
            return
        if self.device.type != "cpu":
            self._make_room_on_device(entry.nbytes, keep=entry)
        _move(entry.value, self.device, self.component_dtype(entry.ref.component))
        entry.device = self.device
        entry.nbytes = module_nbytes(entry.value)

    def _make_room_on_device(self, needed: int, keep: _Entry | None = None) -> None:
        on_device = sorted(
            (e for e in self._entries.values() if e.device == self.device and e is not keep),
            key=lambda e: e.last_used,
        )
        used = sum(e.nbytes for e in on_device)
        for victim in on_device:
            if used + needed <= self.vram_budget:
                break
            if victim.in_use:
                continue
            _move(victim.value, torch.device("cpu"), None)
            victim.device = torch.device("cpu")
            used -= victim.nbytes
            self.counters["offloads"] += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _enforce_ram_budget(self) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        if total <= self.ram_budget:
            return
        dropped = False
        for victim in sorted(self._entries.values(), key=lambda e: e.last_used):
            if total <= self.ram_budget:
                break
            if victim.in_use:
                continue
            del self._entries[victim.ref.key]
            total -= victim.nbytes
            self.counters["drops"] += 1
            dropped = True
        if dropped:
            release_memory()

    # --- the memory-owner protocol (server /free, /system_stats, `nodegraph models`) -----------------------------

    def free(self, unload_models: bool = False, free_memory: bool = False) -> None:
        with self._lock:
            if unload_models:
                for key, entry in list(self._entries.items()):
                    if not entry.in_use:
                        del self._entries[key]
                        self.counters["drops"] += 1
            elif free_memory:
                for entry in self._entries.values():
                    if not entry.in_use and entry.device != torch.device("cpu"):
                        _move(entry.value, torch.device("cpu"), None)
                        entry.device = torch.device("cpu")
                        self.counters["offloads"] += 1
        release_memory()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            entries = [
                {
                    "file": e.ref.source.name,
                    "path": e.ref.source.path,
                    "component": e.ref.component,
                    "device": str(e.device),
                    "bytes": e.nbytes,
                    "in_use": e.in_use > 0,
                }
                for e in sorted(self._entries.values(), key=lambda e: -e.last_used)
            ]
            return {
                "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""),
                "vram_budget": self.vram_budget,
                "ram_budget": self.ram_budget,
                "loaded": entries,
                "bytes_on_device": sum(e["bytes"] for e in entries if e["device"] == str(self.device)),
                "max_batch": self.max_batch,
                "batching": _totals(self._entries.values(), ("forwards", "shared_forwards", "rows")),
                "decode_batching": _totals(self._entries.values(), ("batches", "shared_batches", "rows")),
                "bytes_total": sum(e["bytes"] for e in entries),
                **self.counters,
            }


def _totals(entries: Any, names: tuple[str, ...]) -> dict[str, int]:
    """The sums of the counters `names` over the entries' batchers that keep them."""
    totals = dict.fromkeys(names, 0)
    for entry in entries:
        counters = getattr(entry.batcher, "counters", {})
        if names[0] in counters:
            for name in names:
                totals[name] += counters[name]
    return totals
