"""The node API: one small declarative class per node type.

    class Add(Node):
        '''Add two integers.'''
        category = "utils/math"
        a = Int(0)
        b = Int(0)
        outputs = (Output("INT", "sum"),)

        def execute(self, a: int, b: int) -> tuple[int]:
            return (a + b,)

`execute` may be a plain method (run on a worker thread, so the event loop never blocks) or `async def` (awaited on
the loop). While it runs, `self.context` gives the node its id, the runtime (folders, settings and what node packs
keep, such as the model cache), progress reporting and the interrupt check.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable

from .spec import Input, Output

if TYPE_CHECKING:
    from .folders import Folders
    from .runtime import Runtime


class Interrupted(Exception):
    """Raised inside a node when the user interrupted the run; the engine turns it into `execution_interrupted`."""


class ExecutionBlocked(Exception):
    """Raised by a node that refuses to run with a message meant for the user, not a bug (ComfyUI's ExecutionBlocker)."""


@dataclass
class NodeResult:
    """What `execute` returns when it has UI output (images to show) as well as, or instead of, link outputs."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


# Live preview methods, with ComfyUI's names (--preview-method and a prompt's extra_data.preview_method): none, auto
# (latent -> RGB factors, as ComfyUI's auto), latent2rgb, taesd (a TAESD decoder from models/vae_approx when
# installed, else latent -> RGB).
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")


def preview_method_of(extra_data: dict[str, Any] | None, default: str) -> str:
    """The preview method a prompt asked for in extra_data, else `default` ("default" or anything unknown too)."""
    asked = (extra_data or {}).get("preview_method")
    return asked if isinstance(asked, str) and asked in PREVIEW_METHODS else default


@dataclass
class NodeContext:
    """What a running node may know and do besides its inputs."""

    node_id: str
    prompt_id: str
    runtime: Runtime  # the executor's: folders, settings, the packs' resources (engine/runtime.py)
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_data: dict[str, Any] = field(default_factory=dict)
    report: Callable[[str, dict[str, Any]], None] = lambda event, data: None
    interrupted: Callable[[], bool] = lambda: False
    previews: bool = True  # whether anyone wants preview images (the CLI does not: they are skipped)
    preview_method: str = "auto"  # how samplers make them (PREVIEW_METHODS); "none" when previews is False

    @property
    def env(self) -> Folders | None:
        """The folders (models, input, output, temp) and their settings: what `fingerprint`, `check_inputs` and
        combo choices get as `env`."""
        return self.runtime.folders

    def check_interrupted(self) -> None:
        """Raise Interrupted if the user asked to stop; long nodes call this inside their loops."""
        if self.interrupted():
            raise Interrupted(f"interrupted while node {self.node_id} was running")

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Report progress (and optionally a preview image, e.g. a PIL image) and honour an interrupt."""
        self.report("progress", {"value": int(value), "max": int(total), "node": self.node_id})
        if preview is not None and self.previews:
            self.report("preview", {"node": self.node_id, "image": preview})
        self.check_interrupted()

    @property
    def extra_pnginfo(self) -> dict[str, Any] | None:
        return self.extra_data.get("extra_pnginfo")


class Node:
    """Base class of every node type. Subclasses declare inputs as class attributes and `outputs` as a tuple."""

    # What the registry and object_info publish. `type_name` defaults to the class name.
    type_name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    category: ClassVar[str] = "utils"
    description: ClassVar[str] = ""
    outputs: ClassVar[tuple[Output, ...]] = ()
    output_node: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    experimental: ClassVar[bool] = False
    # Other class_type names that resolve to this node (e.g. ComfyUI's names for ours).
    aliases: ClassVar[tuple[str, ...]] = ()
    # ComfyUI's hidden inputs this node reads from its context, published in object_info for clients.
    hidden: ClassVar[dict[str, str]] = {}
    # The result depends on the node's identity (e.g. it writes files named after it): key the cache on the id too.
    not_idempotent: ClassVar[bool] = False

    inputs: ClassVar[dict[str, Input]] = {}
    context: NodeContext

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inputs: dict[str, Input] = {}
        for base in reversed(cls.__mro__[1:]):
            inputs.update(getattr(base, "inputs", {}))
        for name, value in vars(cls).items():
            if isinstance(value, Input):
                inputs[name] = value
        cls.inputs = inputs
        if not cls.__dict__.get("type_name"):
            cls.type_name = cls.__name__
        if not cls.__dict__.get("description") and cls.__doc__:
            cls.description = inspect.cleandoc(cls.__doc__)

    def execute(self, **inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.execute")

    @classmethod
    def fingerprint(cls, env: Folders | None, **constants: Any) -> Hashable | None:
        """What, besides the inputs, the result depends on (ComfyUI's IS_CHANGED).

        Return None for a pure node. A node that reads a file returns e.g. its hash or mtime, so that a changed
        file re-runs it; return `float("nan")` to run every time.
        """
        return None

    @classmethod
    def check_inputs(cls, env: Folders | None, **constants: Any) -> dict[str, str] | None:
        """Extra validation of literal inputs (ComfyUI's VALIDATE_INPUTS): `{input_name: message}` for problems."""
        return None

    @classmethod
    def is_async(cls) -> bool:
        return inspect.iscoroutinefunction(cls.execute)

    @classmethod
    def required_inputs(cls) -> list[Input]:
        return [i for i in cls.inputs.values() if not i.optional]

    @classmethod
    def optional_inputs(cls) -> list[Input]:
        return [i for i in cls.inputs.values() if i.optional]

    @classmethod
    def title(cls) -> str:
        return cls.display_name or cls.type_name

    @classmethod
    def object_info(cls, env: Folders | None = None, name: str | None = None) -> dict[str, Any]:
        """ComfyUI's object_info record for this node (docs/compat.md §3.4)."""
        required = {i.name: i.object_info(env) for i in cls.required_inputs()}
        optional = {i.name: i.object_info(env) for i in cls.optional_inputs()}
        info: dict[str, Any] = {
            "input": {"required": required},
            "input_order": {"required": list(required)},
            "is_input_list": False,
            "output": [o.type for o in cls.outputs],
            "output_is_list": [o.is_list for o in cls.outputs],
            "output_name": [o.label for o in cls.outputs],
            "output_tooltips": [o.tooltip or "" for o in cls.outputs],
            "name": name or cls.type_name,
            "display_name": cls.title(),
            "description": cls.description,
            "python_module": cls.__module__,
            "category": cls.category,
            "output_node": cls.output_node,
        }
        if optional:
            info["input"]["optional"] = optional
            info["input_order"]["optional"] = list(optional)
        if cls.hidden:
            info["input"]["hidden"] = dict(cls.hidden)
        if cls.deprecated:
            info["deprecated"] = True
        if cls.experimental:
            info["experimental"] = True
        return info


def normalize_result(node_cls: type[Node], result: Any) -> NodeResult:
    """Accept a NodeResult, a tuple of outputs, or a bare value for a single-output node."""
    if isinstance(result, NodeResult):
        out = result
    elif isinstance(result, tuple):
        out = NodeResult(outputs=result)
    elif result is None and not node_cls.outputs:
        out = NodeResult()
    elif len(node_cls.outputs) == 1:
        out = NodeResult(outputs=(result,))
    else:
        raise TypeError(
            f"{node_cls.type_name}.execute returned {type(result).__name__}; "
            f"expected a tuple of {len(node_cls.outputs)} outputs or a NodeResult"
        )
    if len(out.outputs) != len(node_cls.outputs):
        raise TypeError(
            f"{node_cls.type_name}.execute returned {len(out.outputs)} outputs; it declares {len(node_cls.outputs)}"
        )
    return out
