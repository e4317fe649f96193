"""The runtime carried on the node context: folders, typed settings, and what packs keep per runtime."""
import asyncio
import threading

from nodegraph.engine import Executor, Folders, Int, Node, NodeRegistry, NodeResult, Runtime, validate_prompt


class Owner:
    name = "things"

    def __init__(self) -> None:
        self.freed: list[tuple[bool, bool]] = []

    def stats(self) -> dict:
        return {"freed": len(self.freed)}

    def free(self, unload_models: bool = False, free_memory: bool = False) -> None:
        self.freed.append((unload_models, free_memory))


def test_settings_are_read_typed_from_the_folders():
    runtime = Runtime(Folders(settings={"device": "cpu", "precision": "fp16", "vram_budget": "1024",
                                        "max_batch": 8}))
    assert (runtime.device, runtime.precision, runtime.vram_budget, runtime.ram_budget, runtime.max_batch) == (
        "cpu", "fp16", 1024, None, 8)
    bare = Runtime()
    assert (bare.settings, bare.device, bare.precision, bare.max_batch) == ({}, "auto", "auto", 1)


def test_a_resource_is_made_once_even_when_asked_for_at_the_same_moment():
    runtime = Runtime(Folders())
    made: list[int] = []
    barrier = threading.Barrier(8)
    got: list[object] = []

    def make(rt: Runtime) -> Owner:
        assert rt is runtime
        made.append(1)
        return Owner()

    def ask() -> None:
        barrier.wait()
        got.append(runtime.resource("things", make))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len({id(g) for g in got}) == 1
    runtime.resource("plain", lambda rt: {"not": "an owner"})
    assert runtime.owners() == [got[0]]
    assert Runtime(Folders()).resource("things", lambda rt: Owner()) is not got[0]  # another runtime: its own


class Take(Node):
    """Asks its runtime for the shared resource and says which one it got."""

    output_node = True
    value = Int(0)

    def execute(self, value: int) -> NodeResult:
        owner = self.context.runtime.resource("things", lambda rt: Owner())
        assert self.context.env is self.context.runtime.folders
        return NodeResult(ui={"owner": [id(owner)]})


def test_executors_sharing_a_runtime_share_its_resources_and_free_them():
    registry = NodeRegistry()
    registry.register(Take)
    runtime = Runtime(Folders())
    first, second = Executor(runtime), Executor(runtime)
    other = Executor(Folders())
    assert first.env is runtime.folders and other.runtime is not runtime
    prompt = {"1": {"class_type": "Take", "inputs": {"value": 1}}}
    workflow = validate_prompt(prompt, registry, runtime.folders).workflow
    ids = [asyncio.run(e.run(workflow, f"p{i}")).outputs["1"]["owner"][0] for i, e in enumerate((first, second, other))]
    assert ids[0] == ids[1] != ids[2]
    asyncio.run(second.free(unload_models=True, free_memory=False))
    (owner,) = runtime.owners()
    assert owner.freed == [(True, False)] and other.runtime.owners()[0].freed == []
    for executor in (first, second, other):
        executor.close()

