"""Convert ComfyUI UI-format workflows (what the editor saves) into API prompts (what the engine runs).

The editor saves a *graph*: nodes with positional ``widgets_values``, numbered links, frontend-only helper
nodes (Reroute, PrimitiveNode, notes), muted and bypassed nodes, and subgraphs. The server executes a
*prompt*: ``{id: {"class_type", "inputs", "_meta": {"title"}}}``. The official frontend turns one into the
other in ``graphToPrompt``; this module reproduces that behaviour so a workflow file dropped on our server,
or carried in a PNG, runs exactly as it would have been queued from the editor.

Behaviour mirrored from the frontend (docs/compat.md §3.2-3.3):

* ``widgets_values`` is positional over the widget inputs of the node definition (required, then optional,
  each in ``input_order``), interleaved with frontend-only widgets that never reach the prompt: the
  ``control_after_generate`` combo after inputs that declare it, and the upload button after the required
  inputs of nodes with an ``image_upload`` input. A dict ``widgets_values`` is keyed by input name.
* Every input slot with a link is resolved to its real producer: through ``Reroute`` nodes, through bypassed
  nodes (first input whose type fits), out of and into subgraphs. A resolved link overrides the widget value.
* ``PrimitiveNode`` writes its value into the widget of every input it feeds; it never reaches the prompt.
* Muted (mode 2) and bypassed (mode 4) nodes are left out; inputs linked to nodes that are not in the
  output are then removed.

How positional widget values map onto inputs is in ``uiwidgets``; the other direction (a prompt laid out as an
editor workflow, ``api_to_ui``) is in ``uilayout`` and importable from here.

Where the frontend would silently produce a broken prompt (a node type that is not installed, a dangling
link, a cycle of reroutes), we record a :class:`ConversionProblem` instead, so the caller can tell the user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .uilayout import api_to_ui
from .uiwidgets import MISSING, NodeInfo, widget_inputs, widget_specs
from .workflow import is_link, wrap_literal

__all__ = [
    "ConversionProblem", "ConversionResult", "NodeInfo", "api_to_ui", "is_api_format", "is_ui_format", "ui_to_api",
    "widget_inputs",
]

MODE_NEVER = 2
MODE_BYPASS = 4

# Frontend-only node types: they shape the graph in the editor and never reach the server.
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
VIRTUAL_TYPES = frozenset({REROUTE, PRIMITIVE}) | NOTE_TYPES

# Inside a subgraph definition, links from the subgraph's inputs / to its outputs use these node ids.
SUBGRAPH_INPUT_ID = "-10"
SUBGRAPH_OUTPUT_ID = "-20"


@dataclass(frozen=True)
class ConversionProblem:
    """Something in the workflow that could not be converted as the user meant it."""

    node_id: str
    node_type: str
    title: str
    message: str

    def __str__(self) -> str:
        return f"node {self.node_id} ({self.title}, {self.node_type}): {self.message}"


@dataclass
class ConversionResult:
    """An API prompt and the problems met while building it (empty when the conversion was faithful)."""

    prompt: dict[str, dict[str, Any]]
    problems: list[ConversionProblem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Format detection


def is_api_format(obj: Any) -> bool:
    """True for a non-empty API prompt: every value is a node ``{"class_type": str, "inputs": dict}``."""
    if not isinstance(obj, dict) or not obj:
        return False
    return all(
        isinstance(node, dict)
        and isinstance(node.get("class_type"), str)
        and isinstance(node.get("inputs", {}), dict)
        for node in obj.values()
    )


def is_ui_format(obj: Any) -> bool:
    """True for an editor workflow (schema 0.4 or 1): a ``nodes`` list of ``{id, type}`` and a ``links`` list."""
    if not isinstance(obj, dict):
        return False
    nodes = obj.get("nodes")
    if not isinstance(nodes, list) or not isinstance(obj.get("links", []), (list, dict)):
        return False
    return all(isinstance(node, dict) and "id" in node and "type" in node for node in nodes)


# ---------------------------------------------------------------------------------------------------------
# Widgets: positional widgets_values -> named inputs


# ---------------------------------------------------------------------------------------------------------
# Graph model


@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


def _read_links(raw: Any) -> dict[str, _Link]:
    """Links by id from schema 0.4 6-lists, schema 1 objects, or an object keyed by id."""
    entries = raw.values() if isinstance(raw, dict) else (raw or [])
    links: dict[str, _Link] = {}
    for entry in entries:
        if isinstance(entry, (list, tuple)) and len(entry) >= 5:
            link_id, origin, origin_slot, target, target_slot = entry[:5]
            link_type = entry[5] if len(entry) > 5 else "*"
        elif isinstance(entry, dict) and "id" in entry:
            link_id, origin, origin_slot = entry["id"], entry.get("origin_id"), entry.get("origin_slot", 0)
            target, target_slot = entry.get("target_id"), entry.get("target_slot", 0)
            link_type = entry.get("type", "*")
        else:
            continue
        links[str(link_id)] = _Link(str(origin), int(origin_slot), str(target), int(target_slot), link_type)
    return links


@dataclass
class _Graph:
    """The root graph or one subgraph definition: nodes and links by id."""

    nodes: dict[str, dict]
    links: dict[str, _Link]

    @classmethod
    def read(cls, data: dict) -> _Graph:
        nodes = {str(node["id"]): node for node in data.get("nodes") or [] if isinstance(node, dict) and "id" in node}
        return cls(nodes, _read_links(data.get("links")))


@dataclass
class _Exec:
    """One node as it will execute: a graph node at a path of subgraph instances (id ``a:b:node``)."""

    id: str
    node: dict
    graph: _Graph
    path: tuple[str, ...]
    parent: _Exec | None  # the subgraph instance this node lives in
    overrides: dict[str, Any] = field(default_factory=dict)  # widget values set by primitives / promotion

    @property
    def type(self) -> str:
        return str(self.node.get("type", ""))

    @property
    def mode(self) -> int:
        return self.node.get("mode") or 0

    @property
    def inputs(self) -> list[dict]:
        return [slot if isinstance(slot, dict) else {} for slot in self.node.get("inputs") or []]

    @property
    def outputs(self) -> list[dict]:
        return [slot if isinstance(slot, dict) else {} for slot in self.node.get("outputs") or []]

    def sibling_id(self, node_id: str) -> str:
        return ":".join((*self.path, node_id))


@dataclass(frozen=True)
class _FromNode:
    """A resolved input: output ``slot`` of executable node ``node_id``."""

    node_id: str
    slot: int


@dataclass(frozen=True)
class _FromValue:
    """A resolved input that is a widget value (a subgraph input promoted to a widget on its instance)."""

    value: Any


class _CircularLink(Exception):
    """Link resolution came back to where it started (a loop of reroutes or bypassed nodes)."""


def _types_compatible(a: Any, b: Any) -> bool:
    """LiteGraph's connection rule: wildcards match anything, otherwise any shared member of comma unions."""
    if a in ("", "*", None, 0) or b in ("", "*", None, 0) or a == b:
        return True
    left = [part.strip() for part in str(a).lower().split(",")]
    right = [part.strip() for part in str(b).lower().split(",")]
    return any(x == y or x in ("", "*") or y in ("", "*") for x in left for y in right)


def _bypass_input_index(node: _Exec, slot: int, wanted: Any) -> int:
    """Which input a bypassed node passes through to output ``slot`` for a consumer of type ``wanted``.

    Prefers the input at the same index, then an input of exactly the wanted type, then the first input
    compatible with both the output and the consumer; -1 when none fits.
    """
    inputs = node.inputs
    outputs = node.outputs
    if not inputs:
        return -1
    if wanted in ("*", "", None):
        return slot if slot < len(inputs) else 0
    output_type = outputs[slot].get("type") if slot < len(outputs) else wanted
    if slot < len(inputs):
        same = inputs[slot].get("type")
        if _types_compatible(same, output_type) and _types_compatible(same, wanted):
            return slot
    for index, candidate in enumerate(inputs):
        if candidate.get("type") == wanted:
            return index
    for index, candidate in enumerate(inputs):
        kind = candidate.get("type")
        if _types_compatible(kind, output_type) and _types_compatible(kind, wanted):
            return index
    return -1


# ---------------------------------------------------------------------------------------------------------
# Conversion


class _Converter:
    """One conversion: flattens the graph, resolves links and builds the prompt."""

    def __init__(self, workflow: dict, node_info: NodeInfo) -> None:
        self.node_info = node_info
        self.problems: list[ConversionProblem] = []
        self.keep_unknown = False  # see ui_to_api
        self.subgraphs: dict[str, dict] = {}
        self._collect_subgraphs(workflow)
        self.execs: dict[str, _Exec] = {}
        self._info_cache: dict[str, dict | None] = {}
        self._graph_cache: dict[str, _Graph] = {}
        self._flatten(_Graph.read(workflow), (), None, ())

    # -- structure -------------------------------------------------------------------------------------

    def _collect_subgraphs(self, container: dict) -> None:
        """Subgraph definitions by id, wherever they are declared (root or nested definitions)."""
        for definition in (container.get("definitions") or {}).get("subgraphs") or []:
            if isinstance(definition, dict) and "id" in definition:
                self.subgraphs.setdefault(str(definition["id"]), definition)
                self._collect_subgraphs(definition)

    def _definition(self, subgraph_id: str) -> _Graph:
        if subgraph_id not in self._graph_cache:
            self._graph_cache[subgraph_id] = _Graph.read(self.subgraphs[subgraph_id])
        return self._graph_cache[subgraph_id]

    def _flatten(self, graph: _Graph, path: tuple[str, ...], parent: _Exec | None, stack: tuple[str, ...]) -> None:
        """Register every node of ``graph``; expand active subgraph instances into their inner nodes."""
        for node_id, node in graph.nodes.items():
            ex = _Exec(":".join((*path, node_id)), node, graph, path, parent)
            self.execs[ex.id] = ex
            if ex.type not in self.subgraphs or ex.mode in (MODE_NEVER, MODE_BYPASS):
                continue
            if ex.type in stack:
                self._problem(ex, "subgraph contains itself; its inner nodes were left out")
                continue
            self._flatten(self._definition(ex.type), (*path, node_id), ex, (*stack, ex.type))
            self._apply_proxy_widgets(ex)
        self._apply_primitives(graph, path)

    def _apply_proxy_widgets(self, instance: _Exec) -> None:
        """Values of widgets promoted onto a subgraph instance (``properties.proxyWidgets``) go to inner nodes."""
        proxies = (instance.node.get("properties") or {}).get("proxyWidgets")
        values = instance.node.get("widgets_values")
        if not proxies or not isinstance(values, list):
            return
        if len(proxies) != len(values):
            self._problem(instance, "promoted widget values do not match proxyWidgets; inner values were used")
            return
        for proxy, value in zip(proxies, values):
            if not isinstance(proxy, (list, tuple)) or len(proxy) < 2:
                continue
            inner_id, name = str(proxy[0]), str(proxy[1])
            target = instance if inner_id == "-1" else self.execs.get(f"{instance.id}:{inner_id}")
            if target is not None:
                target.overrides[name] = value

    def _apply_primitives(self, graph: _Graph, path: tuple[str, ...]) -> None:
        """PrimitiveNode copies its value into the widget of every input it feeds (through reroutes)."""
        for node_id, node in graph.nodes.items():
            if node.get("type") != PRIMITIVE:
                continue
            values = node.get("widgets_values")
            if not isinstance(values, list) or not values:
                continue
            for target, slot in self._link_targets(graph, node_id, set()):
                inputs = target.get("inputs") or []
                widget = inputs[slot].get("widget") if slot < len(inputs) and isinstance(inputs[slot], dict) else None
                if isinstance(widget, dict) and "name" in widget:
                    self.execs[":".join((*path, str(target["id"])))].overrides[widget["name"]] = values[0]

    def _link_targets(self, graph: _Graph, origin_id: str, seen: set[str]) -> Iterable[tuple[dict, int]]:
        """(node, input slot) fed by ``origin_id``, looking through reroutes."""
        seen.add(origin_id)
        for link in graph.links.values():
            target = graph.nodes.get(link.target_id)
            if link.origin_id != origin_id or target is None:
                continue
            if target.get("type") == REROUTE:
                if link.target_id not in seen:
                    yield from self._link_targets(graph, link.target_id, seen)
            else:
                yield target, link.target_slot

    # -- link resolution -------------------------------------------------------------------------------

    def resolve_input(self, ex: _Exec, slot: int, visited: set, wanted: Any = None) -> _FromNode | _FromValue | None:
        """What input ``slot`` of ``ex`` really receives, or None when nothing is connected."""
        key = (ex.id, "in", slot)
        if key in visited:
            raise _CircularLink(ex.id)
        visited.add(key)
        inputs = ex.inputs
        if slot >= len(inputs) or inputs[slot].get("link") is None:
            return None
        link = ex.graph.links.get(str(inputs[slot]["link"]))
        if link is None:
            self._problem(ex, f"input '{inputs[slot].get('name')}' uses link {inputs[slot]['link']}, "
                              "which is not in the workflow")
            return None
        if link.origin_id == SUBGRAPH_INPUT_ID and ex.parent is not None:
            return self._resolve_subgraph_input(ex.parent, link.origin_slot, visited)
        origin = self.execs.get(ex.sibling_id(link.origin_id))
        if origin is None:
            # Left as a link: the final pass removes links to nodes that are not in the prompt.
            self._problem(ex, f"input '{inputs[slot].get('name')}' is linked to node {link.origin_id}, "
                              "which is not in the workflow")
            return _FromNode(ex.sibling_id(link.origin_id), link.origin_slot)
        return self.resolve_output(origin, link.origin_slot, wanted or inputs[slot].get("type"), visited)

    def resolve_output(self, ex: _Exec, slot: int, wanted: Any, visited: set) -> _FromNode | _FromValue | None:
        """The executable producer behind output ``slot`` of ``ex``, for a consumer of type ``wanted``."""
        key = (ex.id, "out", slot)
        if key in visited:
            raise _CircularLink(ex.id)
        visited.add(key)
        if ex.mode == MODE_BYPASS:
            index = _bypass_input_index(ex, slot, wanted)
            return None if index < 0 else self.resolve_input(ex, index, visited)
        if ex.type in self.subgraphs and ex.mode != MODE_NEVER:
            return self._resolve_subgraph_output(ex, slot, wanted, visited)
        if ex.type in VIRTUAL_TYPES:
            # Reroutes pass their one input through; primitives and notes produce nothing linkable.
            return self.resolve_input(ex, slot, visited, wanted) if slot < len(ex.inputs) else None
        return _FromNode(ex.id, slot)

    def _resolve_subgraph_input(self, instance: _Exec, index: int, visited: set) -> _FromNode | _FromValue | None:
        """Input ``index`` of a subgraph, seen from inside: the instance's link, or its promoted widget.

        A link that resolves to nothing (a PrimitiveNode, a bypass without a fitting input) leaves the
        promoted widget's value in force, as it does for an ordinary widget input.
        """
        resolved = self.resolve_input(instance, index, visited)
        if resolved is not None:
            return resolved
        value = self._promoted_value(instance, index)
        return None if value is MISSING else _FromValue(value)

    def _promoted_value(self, instance: _Exec, index: int) -> Any:
        """The value of the widget a subgraph instance shows for its input ``index``, if it shows one."""
        inputs = instance.inputs
        widget = inputs[index].get("widget") if index < len(inputs) else None
        if not isinstance(widget, dict) or "name" not in widget:
            return MISSING
        name = widget["name"]
        if name in instance.overrides:
            return instance.overrides[name]
        values = instance.node.get("widgets_values")
        if isinstance(values, dict):
            return values.get(name, MISSING)
        if not isinstance(values, list) or (instance.node.get("properties") or {}).get("proxyWidgets"):
            return MISSING
        widget_slots = [position for position, slot in enumerate(inputs) if isinstance(slot.get("widget"), dict)]
        if len(widget_slots) != len(values):
            return MISSING
        return values[widget_slots.index(index)]

    def _resolve_subgraph_output(self, instance: _Exec, slot: int, wanted: Any, visited: set
                                 ) -> _FromNode | _FromValue | None:
        """Output ``slot`` of a subgraph instance: whatever feeds that output inside the definition."""
        for link in self._definition(instance.type).links.values():
            if link.target_id != SUBGRAPH_OUTPUT_ID or link.target_slot != slot:
                continue
            if link.origin_id == SUBGRAPH_INPUT_ID:
                return self._resolve_subgraph_input(instance, link.origin_slot, visited)
            origin = self.execs.get(f"{instance.id}:{link.origin_id}")
            if origin is None:
                return None
            return self.resolve_output(origin, link.origin_slot, wanted, visited)
        return None

    # -- output ----------------------------------------------------------------------------------------

    def _info(self, node_type: str) -> dict | None:
        if node_type not in self._info_cache:
            self._info_cache[node_type] = self.node_info(node_type)
        return self._info_cache[node_type]

    def _problem(self, ex: _Exec, message: str) -> None:
        info = None if ex.type in self.subgraphs or ex.type in VIRTUAL_TYPES else self._info(ex.type)
        title = ex.node.get("title") or (info or {}).get("display_name") or ex.type
        self.problems.append(ConversionProblem(ex.id, ex.type, str(title), message))

    def _missing_type_message(self, ex: _Exec) -> str:
        # Group nodes (before subgraphs) are typed "workflow>Name", defined in extra.groupNodes.
        if ex.type.startswith(("workflow>", "workflow/")):
            return "legacy group node: not supported, convert it to a subgraph in the editor"
        return "node type not installed"

    def build(self) -> dict[str, dict[str, Any]]:
        """The prompt: one entry per executable node, then links to absent nodes removed."""
        prompt: dict[str, dict[str, Any]] = {}
        for ex in self.execs.values():
            if ex.type in VIRTUAL_TYPES or ex.mode in (MODE_NEVER, MODE_BYPASS) or ex.type in self.subgraphs:
                continue
            info = self._info(ex.type)
            if info is None:
                self._problem(ex, self._missing_type_message(ex))
                if self.keep_unknown:
                    prompt[ex.id] = self._unknown_entry(ex)
                continue
            prompt[ex.id] = self._node_entry(ex, info)
        for entry in prompt.values():
            inputs = entry["inputs"]
            for name in [n for n, v in inputs.items() if is_link(v) and v[0] not in prompt]:
                del inputs[name]
        return prompt

    def _unknown_entry(self, ex: _Exec) -> dict[str, Any]:
        """A node whose type is not installed, as the official frontend queues it: its type, title and links
        (its widget names are unknown), so that validation reports it as a missing node type."""
        inputs: dict[str, Any] = {}
        for slot, socket in enumerate(ex.inputs):
            try:
                resolved = self.resolve_input(ex, slot, set())
            except _CircularLink:
                continue
            if isinstance(resolved, _FromNode):
                inputs[str(socket.get("name"))] = [resolved.node_id, resolved.slot]
        return {"inputs": inputs, "class_type": ex.type, "_meta": {"title": ex.node.get("title") or ex.type}}

    def _node_entry(self, ex: _Exec, info: dict) -> dict[str, Any]:
        values = widget_inputs(info, ex.node.get("widgets_values"))
        specs = widget_specs(info)
        values.update({name: value for name, value in ex.overrides.items() if name in specs})
        inputs = {name: wrap_literal(value) for name, value in values.items()}
        for slot, socket in enumerate(ex.inputs):
            try:
                resolved = self.resolve_input(ex, slot, set())
            except _CircularLink as loop:
                self._problem(ex, f"input '{socket.get('name')}' is part of a link loop through node {loop}")
                continue
            if isinstance(resolved, _FromValue):
                inputs[socket.get("name")] = wrap_literal(resolved.value)
            elif isinstance(resolved, _FromNode):
                inputs[socket.get("name")] = [resolved.node_id, resolved.slot]
        title = ex.node.get("title") or info.get("display_name") or ex.type
        return {"inputs": inputs, "class_type": ex.type, "_meta": {"title": title}}


def ui_to_api(workflow: dict, node_info: NodeInfo, keep_unknown: bool = False) -> ConversionResult:
    """Convert an editor workflow (schema 0.4 or 1, with subgraphs) into an API prompt, as the editor would.

    ``node_info(class_type)`` returns the ``object_info`` record of an installed node class, or None. Nodes
    whose type is not installed are left out and reported in ``problems``; so are dangling links and loops.
    With ``keep_unknown`` those nodes stay in the prompt (type, title, links), so that validating it names each
    one as a missing node type instead of reporting only what they would have fed.
    """
    if not is_ui_format(workflow):
        raise ValueError("not a UI-format workflow: expected an object with 'nodes' and 'links' lists")
    converter = _Converter(workflow, node_info)
    converter.keep_unknown = keep_unknown
    prompt = converter.build()
    # A link resolved from several consumers reports its problem once.
    return ConversionResult(prompt, list(dict.fromkeys(converter.problems)))
