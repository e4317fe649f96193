"""UNet calls of prompts that sample at the same time, batched into one forward (diffusion/batching.py): each caller
gets what its own call would give, a forward never holds more than max_batch rows, and one caller's bad input fails
only that caller."""
from __future__ import annotations

import threading

import pytest
import torch

from nodegraph_nodes.diffusion.batching import UNetBatcher
from nodegraph_nodes.diffusion.tiny import tiny_controlnet, tiny_sd1, tiny_sdxl

# Batched and single forwards differ only by float rounding (other matrix shapes); measured ~1e-6 on these models.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def sd1():
    return tiny_sd1(seed=3).unet


def _call(seed: int, rows: int, tokens: int, dim: int = 32, size: int = 8) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(rows, 4, size, size, generator=g),
        "timestep": torch.randint(0, 1000, (rows,), generator=g).float(),
        "context": torch.randn(rows, tokens, dim, generator=g),
    }


def _run_together(batcher: UNetBatcher, calls: list[dict]) -> tuple[list[torch.Tensor | None], list[BaseException]]:
    """Each call from its own thread, as prompts running side by side; every participant is registered before any
    calls, so the calls meet in the batcher."""
    results: list[torch.Tensor | None] = [None] * len(calls)
    errors: list[BaseException] = []
    views: list = []
    stacks = [batcher.participant() for _ in calls]
    views = [s.__enter__() for s in stacks]
    start = threading.Barrier(len(calls))

    def work(i: int) -> None:
        c = calls[i]
        start.wait()
        try:
            with torch.inference_mode():  # as the samplers run
                results[i] = views[i](
                    c["sample"], c["timestep"], encoder_hidden_states=c["context"],
                    added_cond_kwargs=c.get("added"), down_block_additional_residuals=c.get("down"),
                    mid_block_additional_residual=c.get("mid"), return_dict=False,
                )[0]
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)
        finally:
            stacks[i].__exit__(None, None, None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def _alone(unet: torch.nn.Module, c: dict) -> torch.Tensor:
    return unet(c["sample"], c["timestep"], encoder_hidden_states=c["context"], added_cond_kwargs=c.get("added"),
                down_block_additional_residuals=c.get("down"), mid_block_additional_residual=c.get("mid"),
                return_dict=False)[0]


@torch.inference_mode()
def test_shared_forward_gives_each_caller_its_own_output(sd1):
    # Three prompts: CFG pairs (2 rows) and a cfg-1 prompt (1 row), timesteps of their own, and a long prompt
    # (154 tokens) beside 77-token ones: contexts are repeated to a common length, which attention does not see.
    calls = [_call(1, 2, 77), _call(2, 2, 154), _call(3, 1, 77)]
    batcher = UNetBatcher(sd1, max_batch=16, window=5.0)
    results, errors = _run_together(batcher, calls)
    assert not errors
    assert list(batcher.forwards) == [5]  # one shared forward of all five rows
    for c, got in zip(calls, results):
        expected = _alone(sd1, c)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() < TOLERANCE


@torch.inference_mode()
def test_controlnet_residuals_stay_with_their_prompt(sd1):
    controlnet = tiny_controlnet(sd1, seed=4)
    with_control = _call(5, 2, 77)
    hint = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    down, mid = controlnet(with_control["sample"], with_control["timestep"],
                           encoder_hidden_states=with_control["context"], controlnet_cond=hint, return_dict=False)
    assert sum(float(d.abs().sum()) for d in down) > 0  # the residuals do change the output
    with_control.update(down=down, mid=mid)
    plain = _call(7, 2, 77)
    batcher = UNetBatcher(sd1, max_batch=16, window=5.0)
    results, errors = _run_together(batcher, [with_control, plain])
    assert not errors and list(batcher.forwards) == [4]
    # The plain prompt got zero residuals in the shared call: exactly what no residuals give, up to rounding.
    assert (results[1] - _alone(sd1, plain)).abs().max() < TOLERANCE
    assert (results[0] - _alone(sd1, with_control)).abs().max() < TOLERANCE


@torch.inference_mode()
def test_sdxl_size_conditioning_is_per_prompt():
    unet = tiny_sdxl(seed=8).unet
    dim = unet.config.cross_attention_dim
    pooled_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    calls = []
    for seed, size in ((9, 64), (10, 128)):
        c = _call(seed, 2, 77, dim=dim)
        c["added"] = {"text_embeds": torch.randn(2, pooled_dim, generator=torch.Generator().manual_seed(seed)),
                      "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)}
        calls.append(c)
    batcher = UNetBatcher(unet, max_batch=16, window=5.0)
    results, errors = _run_together(batcher, calls)
    assert not errors and list(batcher.forwards) == [4]
    for c, got in zip(calls, results):
        assert (got - _alone(unet, c)).abs().max() < TOLERANCE


@torch.inference_mode()
def test_a_forward_never_holds_more_than_max_batch_rows(sd1):
    calls = [_call(20 + i, 2, 77) for i in range(5)]
    batcher = UNetBatcher(sd1, max_batch=4, window=5.0)
    results, errors = _run_together(batcher, calls)
    assert not errors
    assert sum(batcher.forwards) == 10 and max(batcher.forwards) <= 4
    assert len(batcher.forwards) >= 3
    for c, got in zip(calls, results):
        assert (got - _alone(sd1, c)).abs().max() < TOLERANCE


@torch.inference_mode()
def test_different_latent_sizes_do_not_share_a_forward(sd1):
    calls = [_call(30, 2, 77, size=8), _call(31, 2, 77, size=16)]
    batcher = UNetBatcher(sd1, max_batch=16, window=0.05)
    results, errors = _run_together(batcher, calls)
    assert not errors and sorted(batcher.forwards) == [2, 2]
    for c, got in zip(calls, results):
        assert (got - _alone(sd1, c)).abs().max() < TOLERANCE


@torch.inference_mode()
def test_one_callers_bad_input_fails_only_that_caller(sd1):
    good = [_call(40, 2, 77), _call(41, 2, 77)]
    bad = _call(42, 2, 77)
    # A residual of the wrong shape: the shared forward raises, then each caller runs alone and only this one fails.
    bad["down"] = [torch.zeros(2, 7, 3, 3)] * 6
    bad["mid"] = torch.zeros(2, 7, 3, 3)
    batcher = UNetBatcher(sd1, max_batch=16, window=5.0)
    results, errors = _run_together(batcher, [good[0], bad, good[1]])
    assert len(errors) == 1 and results[1] is None
    for i, c in ((0, good[0]), (2, good[1])):
        assert (results[i] - _alone(sd1, c)).abs().max() < TOLERANCE


@torch.inference_mode()
def test_a_lone_participant_calls_the_unet_directly(sd1):
    batcher = UNetBatcher(sd1, max_batch=16, window=5.0)
    c = _call(50, 2, 77)
    with batcher.participant() as view:
        got = view(c["sample"], c["timestep"], encoder_hidden_states=c["context"], return_dict=False)[0]
        assert view.config is sd1.config and view.device == sd1.device  # the UNet's own attributes
    assert list(batcher.forwards) == [2]
    assert torch.equal(got, _alone(sd1, c))


@torch.inference_mode()
def test_a_forward_holds_no_more_rows_than_free_memory_allows(sd1, monkeypatch):
    from nodegraph_nodes.diffusion import memory

    per_row = memory.unet_call_bytes(sd1, (1, 4, 8, 8), 1)
    monkeypatch.setattr(memory, "available_bytes", lambda device, settings=None: 3 * per_row)
    calls = [_call(60 + i, 1, 77) for i in range(4)]
    batcher = UNetBatcher(sd1, max_batch=16, window=5.0)
    results, errors = _run_together(batcher, calls)
    assert not errors
    assert sum(batcher.forwards) == 4 and max(batcher.forwards) <= 3


@torch.inference_mode()
def _sample_side_by_side(batcher: UNetBatcher, prompts: int, steps: int, pause: dict[int, float] | None = None,
                         first_seed: int = 200):
    """`prompts` threads, each making `steps` calls in a row (prompt i's call at `step` is `_call(first_seed + 10 * i
    + step, 2, 77)`). Returns the (prompt, "got" | "call", step, time) events in time order and the outputs by
    (prompt, step). `pause`: seconds a prompt waits after its first output before its next call (a long step)."""
    import time

    events: list[tuple[int, str, int, float]] = []
    results: dict[tuple[int, int], torch.Tensor] = {}
    views = [batcher.participant() for _ in range(prompts)]
    entered = [v.__enter__() for v in views]

    def sample(i: int) -> None:
        try:
            for step in range(steps):
                c = _call(first_seed + 10 * i + step, 2, 77)
                events.append((i, "call", step, time.monotonic()))
                with torch.inference_mode():
                    results[i, step] = entered[i](c["sample"], c["timestep"], encoder_hidden_states=c["context"],
                                                  return_dict=False)[0]
                events.append((i, "got", step, time.monotonic()))
                if step == 0 and pause and i in pause:
                    time.sleep(pause[i])
        finally:
            views[i].__exit__(None, None, None)

    threads = [threading.Thread(target=sample, args=(i,)) for i in range(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(events, key=lambda e: e[3]), results


def test_one_forward_at_a_time_and_calls_meet_across_steps(sd1):
    # Four prompts sampling side by side, each making several calls in a row (its sampling steps): calls that come
    # while a forward runs wait for the next one instead of starting a small forward beside it, so at most one
    # forward runs at once, and the prompts keep meeting in shared forwards step after step.
    inside, most_inside = 0, 0
    lock = threading.Lock()

    def count_forwards(module, args, kwargs):
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)

    def left(module, args, kwargs, output):
        nonlocal inside
        with lock:
            inside -= 1

    handles = [sd1.register_forward_pre_hook(count_forwards, with_kwargs=True),
               sd1.register_forward_hook(left, with_kwargs=True)]
    try:
        batcher = UNetBatcher(sd1, max_batch=16, window=5.0)
        steps, prompts = 3, 4
        _, results = _sample_side_by_side(batcher, prompts, steps, first_seed=100)
    finally:
        for h in handles:
            h.remove()
    assert most_inside == 1
    # Every caller registered before the first call and nobody leaves early: each step is one forward of all four.
    assert list(batcher.forwards) == [2 * prompts] * steps
    for (i, step), got in results.items():
        assert (got - _alone(sd1, _call(100 + 10 * i + step, 2, 77))).abs().max() < TOLERANCE


def test_the_callers_of_a_shared_forward_take_their_outputs_one_after_another(sd1, monkeypatch):
    # Woken all at once, their sampler steps ran side by side and passed the GIL back and forth at every small
    # tensor operation; each takes its output when the one before it has called again (or left).
    import nodegraph_nodes.diffusion.batching as batching

    monkeypatch.setattr(batching, "HANDOFF_TIMEOUT", 30.0)  # only the turn, never the timeout, lets one go here
    prompts, steps = 4, 3
    events, _ = _sample_side_by_side(UNetBatcher(sd1, max_batch=16, window=5.0), prompts, steps)
    for step in range(steps - 1):
        # after the forward of `step`: got, call (the next step's), got, call, ... strictly alternating
        after = [(i, kind) for i, kind, s, _ in events
                 if (kind == "got" and s == step) or (kind == "call" and s == step + 1)]
        assert [kind for _, kind in after] == ["got", "call"] * prompts
        assert all(a[0] == b[0] for a, b in zip(after[::2], after[1::2]))  # each caller calls again before the next


def test_a_caller_with_a_long_step_does_not_hold_the_others_back(sd1):
    # The first to take its output sleeps before calling again: the others take theirs after HANDOFF_TIMEOUT
    # instead of waiting for it.
    from nodegraph_nodes.diffusion.batching import HANDOFF_TIMEOUT

    batcher = UNetBatcher(sd1, max_batch=16, window=0.05)
    events, _ = _sample_side_by_side(batcher, 3, 2, pause={i: 1.0 for i in range(3)})
    got = sorted(t for _, kind, s, t in events if kind == "got" and s == 0)
    # everyone sleeps 1 s after its first output; without the timeout the outputs would be ~1 s apart
    assert got[-1] - got[0] < 0.5 and 0.5 > HANDOFF_TIMEOUT


def _two_prompts_starting_apart(sd1, prompts_running: int, delay: float) -> tuple[UNetBatcher, float]:
    """Prompt a starts sampling; with `prompts_running` 2, prompt b starts `delay` s later. Returns the batcher and
    how long a's first call took."""
    import time

    batcher = UNetBatcher(sd1, max_batch=16, prompts_running=lambda: prompts_running)
    took: list[float] = []

    def prompt(wait: float, measure: bool) -> None:
        time.sleep(wait)
        with batcher.participant() as unet:
            c = _call(300 + int(wait * 1000), 2, 77)
            started = time.monotonic()
            with torch.inference_mode():
                unet(c["sample"], c["timestep"], encoder_hidden_states=c["context"], return_dict=False)
            if measure:
                took.append(time.monotonic() - started)

    threads = [threading.Thread(target=prompt, args=(0.0, True))]
    if prompts_running > 1:
        threads.append(threading.Thread(target=prompt, args=(delay, False)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return batcher, took[0]


def test_a_prompt_starting_to_sample_waits_a_moment_for_the_prompts_beside_it(sd1, monkeypatch):
    # Two prompts run; b reaches its sampler 60 ms after a (its client sent it later): a's first call waits for it
    # (the window between steps, 20 ms, would not), so they share their first forward instead of drifting apart.
    import nodegraph_nodes.diffusion.batching as batching

    monkeypatch.setattr(batching, "FIRST_CALL_WINDOW", 30.0)  # however slow the machine, b comes within it
    batcher, _ = _two_prompts_starting_apart(sd1, prompts_running=2, delay=0.06)
    assert list(batcher.forwards) == [4]


def test_a_prompt_alone_on_the_server_does_not_wait(sd1, monkeypatch):
    # Nobody else runs: its first call runs at once. With an hour-long window, a wait would hang this test.
    import nodegraph_nodes.diffusion.batching as batching

    monkeypatch.setattr(batching, "FIRST_CALL_WINDOW", 3600.0)
    batcher, _ = _two_prompts_starting_apart(sd1, prompts_running=1, delay=0.0)
    assert list(batcher.forwards) == [2]


def test_the_cpu_compute_turn_is_held_by_one_thread_at_a_time_under_concurrency():
    from nodegraph_nodes.diffusion.model_cache import ModelCache

    cache = ModelCache(device="cpu")
    with cache.compute(), cache.compute():  # one prompt at a time: nothing to share the cores with, no turn taken
        pass
    cache.max_batch = 16  # prompts side by side (serve --concurrency)
    holding, second_in = threading.Event(), threading.Event()
    release = threading.Event()

    def first() -> None:
        with cache.compute():
            holding.set()
            release.wait()

    def second() -> None:
        holding.wait()
        with cache.compute():
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    holding.wait()
    assert not second_in.wait(0.2)  # the second computation waits for the first one's turn to end
    release.set()
    for t in threads:
        t.join()
    assert second_in.is_set()
    with cache.compute(), cache.compute():  # re-entrant on one thread
        pass
