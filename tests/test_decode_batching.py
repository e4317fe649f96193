"""VAE decodes of prompts running side by side, batched (diffusion/decode_batching.py): decodes asked while one
runs share the next batch, each caller gets the image its own decode gives, a batch holds no more rows than allowed,
and a failing batch fails only the caller at fault."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
import torch

from nodegraph_nodes.diffusion.decode_batching import DecodeBatcher
from nodegraph_nodes.diffusion.tiny import tiny_sd1

# Batched and single decodes differ only by float rounding of the batched kernels.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def vae():
    return tiny_sd1(seed=3).vae


def _latent(seed: int, size: int = 8) -> torch.Tensor:
    return torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed))


class _HoldFirst:
    """A compute turn that keeps the first batch waiting until `waiting` decodes are queued behind it, so that the
    test knows which decodes meet."""

    def __init__(self, waiting: int):
        self.waiting = waiting
        self.batcher: DecodeBatcher | None = None
        self.first = True
        self.entered = threading.Event()  # the first batch holds the VAE

    @contextmanager
    def __call__(self):
        if self.first:
            self.first = False
            self.entered.set()
            deadline = time.monotonic() + 10
            while self.batcher.queued < self.waiting and time.monotonic() < deadline:
                time.sleep(0.001)
        yield


def _batcher(vae, waiting: int, max_rows: int = 16) -> tuple[DecodeBatcher, _HoldFirst]:
    hold = _HoldFirst(waiting)
    batcher = DecodeBatcher(vae, lambda z: max_rows, compute=hold)
    hold.batcher = batcher
    return batcher, hold


def _decode_together(batcher: DecodeBatcher, hold: _HoldFirst, latents: list[torch.Tensor]):
    """Each latent from its own thread, the first one first (it runs alone and holds the others back)."""
    results: list = [None] * len(latents)
    errors: dict[int, BaseException] = {}

    def work(i: int) -> None:
        try:
            results[i] = batcher.decode(latents[i])
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(latents))]
    threads[0].start()
    assert hold.entered.wait(10)  # the first decode holds the VAE
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(30)
    return results, errors


def test_decodes_asked_while_one_runs_share_the_next_batch(vae):
    latents = [_latent(i) for i in range(5)]
    batcher, hold = _batcher(vae, waiting=4)
    results, errors = _decode_together(batcher, hold, latents)
    assert not errors
    assert batcher.counters == {"batches": 2, "shared_batches": 1, "rows": 5}
    with torch.no_grad():
        for latent, image in zip(latents, results):
            alone = vae.decode(latent).sample.float()
            assert image.shape == alone.shape == (1, 3, 64, 64)
            assert (image - alone).abs().max().item() < TOLERANCE


def test_a_batch_never_holds_more_rows_than_allowed(vae):
    batcher, hold = _batcher(vae, waiting=4, max_rows=2)
    results, errors = _decode_together(batcher, hold, [_latent(i) for i in range(5)])
    assert not errors and all(r is not None for r in results)
    assert batcher.counters == {"batches": 3, "shared_batches": 2, "rows": 5}


def test_latents_of_other_sizes_do_not_share_a_batch(vae):
    latents = [_latent(0), _latent(1), _latent(2, size=16), _latent(3)]
    batcher, hold = _batcher(vae, waiting=3)
    results, errors = _decode_together(batcher, hold, latents)
    assert not errors and results[2].shape == (1, 3, 128, 128)
    assert batcher.counters["batches"] == 3 and batcher.counters["rows"] == 4


class _FailsOnMarker(torch.nn.Module):
    """A VAE whose decode fails when a latent in the batch is marked (its first value is 123)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def decode(self, z):
        if (z[:, 0, 0, 0] == 123).any():
            raise RuntimeError("bad latent")
        return self.vae.decode(z)


def test_a_failing_batch_fails_only_the_caller_at_fault(vae):
    latents = [_latent(i) for i in range(4)]
    latents[2][0, 0, 0, 0] = 123
    batcher, hold = _batcher(_FailsOnMarker(vae), waiting=3)
    results, errors = _decode_together(batcher, hold, latents)
    assert list(errors) == [2] and "bad latent" in str(errors[2])
    with torch.no_grad():
        for i in (0, 1, 3):
            assert (results[i] - vae.decode(latents[i]).sample).abs().max().item() < TOLERANCE
