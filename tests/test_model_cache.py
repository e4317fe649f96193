"""The model cache on the CPU: one read per file, LRU eviction under a RAM budget, pinned models, /free, RSS."""
import gc
import threading

import psutil
import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph.engine import Executor, Folders, Runtime
from nodegraph_nodes.diffusion.cache_readers import model_cache
from nodegraph_nodes.diffusion.model_cache import FileIdentity, ModelCache, module_nbytes

MB = 1 << 20


def write_model(path, n_features, seed=0):
    torch.manual_seed(seed)
    save_file({"a.weight": torch.randn(n_features, n_features), "b.weight": torch.randn(n_features, n_features)}, path)
    return path


class Reader:
    """A file reader that counts reads: two Linear layers as two components."""

    def __init__(self):
        self.reads = []

    def __call__(self, path):
        self.reads.append(path)
        state = load_file(path)
        parts = {}
        for name in ("a", "b"):
            weight = state[f"{name}.weight"]
            layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            layer.weight.data.copy_(weight)
            parts[name] = layer
        return parts


@pytest.fixture
def cache():
    reader = Reader()
    cache = ModelCache(device="cpu", ram_budget=10 * MB)
    cache.register_loader("pair", reader)
    cache.reader = reader
    return cache


def test_one_read_per_file_and_shared_components(cache, tmp_path):
    path = write_model(tmp_path / "m.safetensors", 256)
    refs = cache.refs(path, "pair", ("a", "b"))
    again = cache.refs(tmp_path / "m.safetensors", "pair", ("a", "b"))
    assert refs == again  # same identity: same keys
    with cache.use(refs["a"]) as a:
        assert isinstance(a, torch.nn.Linear)
    with cache.use(again["b"]):
        pass
    with cache.use(refs["a"]) as a2:
        assert a2 is a
    assert len(cache.reader.reads) == 1
    stats = cache.stats()
    assert stats["file_reads"] == 1 and stats["misses"] == 1 and stats["hits"] == 2
    assert {e["component"] for e in stats["loaded"]} == {"a", "b"}
    assert stats["bytes_total"] == 2 * 256 * 256 * 4


def test_a_replaced_file_is_read_again(cache, tmp_path):
    path = write_model(tmp_path / "m.safetensors", 64)
    first = cache.refs(path, "pair", ("a",))["a"]
    with cache.use(first):
        pass
    write_model(path, 32, seed=1)  # new size and mtime: a new identity
    second = cache.refs(path, "pair", ("a",))["a"]
    assert second != first
    with cache.use(second) as a:
        assert a.weight.shape == (32, 32)
    assert len(cache.reader.reads) == 2


def test_lru_eviction_under_the_ram_budget(cache, tmp_path):
    # each file holds 2 x 1 MiB; the budget is 10 MiB: the sixth file pushes out the least recently used
    paths = [write_model(tmp_path / f"m{i}.safetensors", 512, seed=i) for i in range(6)]
    refs = [cache.refs(p, "pair", ("a", "b")) for p in paths]
    def use_file(r):
        for component in ("a", "b"):
            with cache.use(r[component]):
                pass

    for r in refs[:5]:
        use_file(r)
    use_file(refs[0])  # touch file 0: file 1 is now the least recently used
    use_file(refs[5])
    loaded = {(e["file"], e["component"]) for e in cache.stats()["loaded"]}
    assert ("m1.safetensors", "a") not in loaded and ("m1.safetensors", "b") not in loaded
    assert ("m0.safetensors", "a") in loaded
    assert cache.stats()["drops"] >= 2
    assert cache.stats()["bytes_total"] <= cache.ram_budget


def test_models_in_use_are_not_evicted(cache, tmp_path):
    small = ModelCache(device="cpu", ram_budget=3 * MB)
    small.register_loader("pair", cache.reader)
    big = [small.refs(write_model(tmp_path / f"b{i}.safetensors", 512, seed=i), "pair", ("a", "b")) for i in range(3)]
    with small.use(big[0]["a"]) as pinned:
        with small.use(big[1]["a"]):
            with small.use(big[2]["a"]):
                keys = {(e["file"], e["component"]) for e in small.stats()["loaded"]}
                # all three in-use components survive although the budget is exceeded
                assert {("b0.safetensors", "a"), ("b1.safetensors", "a"), ("b2.safetensors", "a")} <= keys
        assert ("b0.safetensors", "a") in {(e["file"], e["component"]) for e in small.stats()["loaded"]}
        assert pinned.weight.shape == (512, 512)
    assert small.stats()["bytes_total"] <= small.ram_budget


def test_free_unloads_and_rss_goes_down(tmp_path):
    reader = Reader()
    cache = ModelCache(device="cpu", ram_budget=4 << 30)
    cache.register_loader("pair", reader)
    refs = [cache.refs(write_model(tmp_path / f"r{i}.safetensors", 2048, seed=i), "pair", ("a", "b")) for i in range(4)]
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    for r in refs:
        with cache.use(r["a"]):
            pass
    loaded = process.memory_info().rss
    assert loaded - before > 80 * MB  # 4 files x 2 x 16 MiB
    cache.free(unload_models=True)
    after = process.memory_info().rss
    assert cache.stats()["loaded"] == []
    assert loaded - after > 0.7 * (loaded - before), (before >> 20, loaded >> 20, after >> 20)


def test_concurrent_use_reads_once(cache, tmp_path):
    ref = cache.refs(write_model(tmp_path / "c.safetensors", 128), "pair", ("a",))["a"]
    errors = []

    def worker():
        try:
            with cache.use(ref):
                pass
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache.reader.reads) == 1


def test_identity_of_a_folder(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.bin").write_bytes(b"x" * 10)
    (tmp_path / "model_index.json").write_text("{}")
    ident = FileIdentity.of(tmp_path)
    assert ident.size == 12 and ident.path == str(tmp_path.resolve())


def test_the_runtime_cache_is_its_memory_owner():
    runtime = Runtime(Folders(settings={"device": "cpu"}))
    cache = model_cache(runtime)
    assert cache in runtime.owners() and cache.name == "models"
    assert model_cache(runtime) is cache
    sharing = Executor(runtime), Executor(runtime)  # e.g. the slots of serve --concurrency
    assert model_cache(sharing[0].runtime) is cache and model_cache(sharing[1].runtime) is cache
    other = Runtime(Folders(settings={"device": "cpu", "precision": "bf16"}))
    assert model_cache(other) is not cache  # another runtime (here: other settings): its own cache
    assert str(model_cache(other).dtype) == "torch.bfloat16" and cache.dtype == torch.float32
    for executor in sharing:
        executor.close()
    assert module_nbytes(torch.nn.Linear(4, 4)) == (16 + 4) * 4


def test_precision_policy():
    cache = ModelCache(device="cpu", precision="fp16")
    assert cache.dtype == torch.float16
    assert cache.component_dtype("unet") == torch.float16
    assert cache.component_dtype("vae") == torch.float32  # fp16 VAEs overflow
    assert ModelCache(device="cpu", precision="bf16").component_dtype("vae") == torch.bfloat16
    assert ModelCache(device="cpu").dtype == torch.float32  # auto on the CPU


def test_components_are_cast_to_the_device_precision(tmp_path):
    reader = Reader()
    cache = ModelCache(device="cpu", precision="bf16")
    cache.register_loader("pair", reader)
    ref = cache.refs(write_model(tmp_path / "p.safetensors", 16), "pair", ("a",))["a"]
    with cache.use(ref) as a:
        assert a.weight.dtype == torch.bfloat16


def test_vram_budget_offloads_least_recently_used_idle_models(tmp_path):
    """The accelerator-side policy, checked without an accelerator: entries marked as placed on "cuda:0" are
    moved back to the CPU, least recently used first, skipping those in use, until the new one fits."""
    reader = Reader()
    cache = ModelCache(device="cpu", vram_budget=3 * MB)
    cache.register_loader("pair", reader)
    refs = [cache.refs(write_model(tmp_path / f"v{i}.safetensors", 512, seed=i), "pair", ("a",))["a"] for i in range(3)]
    for ref in refs:
        cache.preload(ref)
    gpu = torch.device("cuda:0")
    cache.device = gpu
    entries = [cache._entries[ref.key] for ref in refs]
    for order, entry in enumerate(entries):
        entry.device, entry.last_used = gpu, float(order)  # v0 least recently used
    entries[0].in_use = 1  # ...but in use: it must stay
    cache._make_room_on_device(2 * MB)  # 3 MiB on the device + 2 needed > 3 MiB budget
    assert [e.device.type for e in entries] == ["cuda", "cpu", "cpu"]
    assert cache.stats()["offloads"] == 2
