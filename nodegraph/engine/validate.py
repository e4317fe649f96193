"""Whole-workflow validation with ComfyUI's error shapes (docs/compat.md §1.3), reporting every problem at once.

`validate_prompt` checks every node an output needs: its class exists, each required input is present, links point
at an existing node and output of a compatible type, literals coerce to their type and fit min / max / choices, the
node's own `check_inputs` passes, and no node depends on itself through a cycle. Each error names the node, its
class, the input, what was expected and what was received; each failing node lists the outputs it takes down.
Outputs whose dependencies are all valid are kept (`ValidationResult.workflow.outputs`); the result is an error
only when no output survives, or when a node type is unknown. A valid result is also the run's plan: the
`Workflow` holds only the nodes the kept outputs need, and the order to run them in (`workflow.run_order`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from .errors import validation_error as _error
from .errors import validation_response
from .node import Node
from .registry import NodeRegistry
from .spec import Input, InputError
from .workflow import Link, NodeSpec, Workflow, is_link, node_sort_key, run_order, unwrap_literal

if TYPE_CHECKING:
    import networkx as nx

    from .folders import Folders


@dataclass
class ValidationResult:
    workflow: Workflow | None
    error: dict[str, Any] | None = None
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def response(self) -> dict[str, Any]:
        """The body of ComfyUI's 400 answer."""
        return validation_response(self.error, self.node_errors)


MAX_CYCLE_LISTED = 20  # nodes named in a cycle error; the error gives the cycle's full length
MAX_DETAILS_LISTED = 20  # problems spelled out in the top-level error's details; every one is in node_errors
MAX_ECHOED_CHOICES = 20  # as ComfyUI: longer combo lists are not echoed back in errors


def _title(node: Any, class_type: str | None, cls: type[Node] | None) -> str:
    meta = node.get("_meta") if isinstance(node, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("title"), str) and meta["title"]:
        return meta["title"]
    if cls is not None:
        return cls.title()
    return class_type or "?"


def validate_prompt(
    prompt: Any,
    registry: NodeRegistry,
    env: Folders | None = None,
    targets: Iterable[str] | None = None,
) -> ValidationResult:
    """Validate an API-format workflow; `targets` limits execution to these output nodes (partial execution).

    The steps: read every node's class, pick the outputs, follow links back from them to the nodes they need,
    check those nodes and the cycles among them, then plan the outputs that survive (`Workflow`).
    """
    if not isinstance(prompt, dict):
        return ValidationResult(None, _error(
            "invalid_prompt", "Invalid prompt",
            f"a workflow is an object mapping node ids to nodes, got {type(prompt).__name__}",
        ))
    check = _Validation(prompt, registry, env)
    check.read_nodes()
    outputs = check.outputs(targets)
    if not outputs and not check.missing:
        return ValidationResult(None, _error(
            "prompt_no_outputs", "Prompt has no outputs",
            "the workflow has no output node (such as SaveImage or PreviewImage) to run"
            + (" among the requested targets" if targets is not None else ""),
        ), check.node_errors)
    graph = check.needed_graph(outputs)
    specs = check.check_nodes(graph)
    check.check_cycles(graph)
    good_outputs = check.surviving_outputs(graph, outputs)
    return check.result(specs, good_outputs)


class _Validation:
    """One validation: the nodes read from the prompt and the errors found so far, by node."""

    def __init__(self, prompt: dict[str, Any], registry: NodeRegistry, env: Folders | None):
        self.prompt = prompt
        self.registry = registry
        self.env = env
        self.node_errors: dict[str, dict[str, Any]] = {}
        self.missing: list[dict[str, Any]] = []  # unknown node types: the first one is the top-level error
        self.classes: dict[str, type[Node]] = {}
        self.raw_nodes: dict[str, dict[str, Any]] = {}
        self.needs: dict[str, set[str]] = {}  # output id -> the nodes it needs, itself included

    def add_errors(self, nid: str, class_type: str | None, errors: list[dict[str, Any]]) -> None:
        entry = self.node_errors.setdefault(nid, {"errors": [], "dependent_outputs": [], "class_type": class_type})
        entry["errors"].extend(errors)

    # --- reading -------------------------------------------------------------------------------------------------

    def read_nodes(self) -> None:
        for key, node in self.prompt.items():
            self._read_node(str(key), node)

    def _read_node(self, nid: str, node: Any) -> None:
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(class_type, str):
            self._missing_type(nid, None, _error(
                "missing_node_type",
                f"Node '#{nid}' has no class_type. The workflow may be corrupted or a custom node is missing.",
                f"Node ID '#{nid}': expected an object with a string 'class_type' and an 'inputs' object",
                node_id=nid, class_type=None, node_title=_title(node, None, None),
            ))
            return
        cls = self.registry.get(class_type)
        if cls is None:
            title = _title(node, class_type, None)
            self._missing_type(nid, class_type, _error(
                "missing_node_type",
                f"Node '{title}' not found. The custom node may not be installed.",
                f"Node ID '#{nid}': node type {class_type!r} is not installed",
                node_id=nid, class_type=class_type, node_title=title,
            ))
            return
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            self.add_errors(nid, class_type, [
                _error("invalid_prompt", "Invalid node", f"Node ID '#{nid}': 'inputs' must be an object")
            ])
            inputs = {}
        self.classes[nid] = cls
        self.raw_nodes[nid] = {"class_type": class_type, "inputs": inputs, "title": _title(node, class_type, cls)}

    def _missing_type(self, nid: str, class_type: str | None, error: dict[str, Any]) -> None:
        self.missing.append(error)
        self.add_errors(nid, class_type, [error])

    def outputs(self, targets: Iterable[str] | None) -> list[str]:
        outputs = sorted((nid for nid, cls in self.classes.items() if cls.output_node), key=node_sort_key)
        if targets is not None:
            wanted = {str(t) for t in targets}
            outputs = [nid for nid in outputs if nid in wanted]
        return outputs

    def needed_graph(self, outputs: list[str]) -> nx.DiGraph:
        """The nodes the outputs need, following links (also into unknown or invalid nodes, to attribute
        failures)."""
        import networkx as nx  # here, not at the top: it is most of the engine's import time

        graph = nx.DiGraph()
        needed: set[str] = set()
        stack = list(outputs)
        while stack:
            nid = stack.pop()
            if nid in needed:
                continue
            needed.add(nid)
            graph.add_node(nid)
            if nid not in self.raw_nodes:
                continue
            for value in self.raw_nodes[nid]["inputs"].values():
                if is_link(value) and isinstance(value[1], int):
                    src = str(value[0])
                    if src in self.prompt:
                        graph.add_edge(src, nid)
                        stack.append(src)
        return graph

    # --- checking ------------------------------------------------------------------------------------------------

    def check_nodes(self, graph: nx.DiGraph) -> dict[str, NodeSpec]:
        specs: dict[str, NodeSpec] = {}
        for nid in sorted(graph, key=node_sort_key):
            if nid not in self.classes:
                continue
            raw = self.raw_nodes[nid]
            errors, spec = _validate_node(nid, self.classes[nid], raw, self.classes, self.prompt, self.env)
            if errors:
                self.add_errors(nid, raw["class_type"], errors)
            specs[nid] = spec
        return specs

    def check_cycles(self, graph: nx.DiGraph) -> None:
        import networkx as nx

        for component in nx.strongly_connected_components(graph):
            if len(component) == 1:
                (only,) = component
                if not graph.has_edge(only, only):
                    continue
            self._cycle_error(sorted(component, key=node_sort_key))

    def _cycle_error(self, cycle: list[str]) -> None:
        # One error per cycle, on its first node, listing at most MAX_CYCLE_LISTED nodes: an error per node, each
        # listing the whole cycle, made the answer grow with the square of the cycle (90 MB for 2,000 nodes).
        first = cycle[0]
        shown = " -> ".join(cycle[:MAX_CYCLE_LISTED] + ([cycle[0]] if len(cycle) <= MAX_CYCLE_LISTED else ["..."]))
        class_type = self.raw_nodes[first]["class_type"] if first in self.raw_nodes else None
        self.add_errors(first, class_type, [_error(
            "dependency_cycle",
            "Dependency cycle detected",
            f"node {first} depends on itself through a cycle of {len(cycle)} node"
            f"{'s' if len(cycle) != 1 else ''}: {shown}",
            cycle=cycle[:MAX_CYCLE_LISTED],
            cycle_length=len(cycle),
        )])

    def surviving_outputs(self, graph: nx.DiGraph, outputs: list[str]) -> list[str]:
        """The outputs none of whose needed nodes failed; each failing node lists the outputs it takes down."""
        import networkx as nx

        good_outputs = []
        for out in outputs:
            self.needs[out] = nx.ancestors(graph, out) | {out}
            failing = [nid for nid in self.needs[out] if nid in self.node_errors]
            if failing:
                for nid in failing:
                    self.node_errors[nid]["dependent_outputs"].append(out)
            else:
                good_outputs.append(out)
        return good_outputs

    # --- the answer ----------------------------------------------------------------------------------------------

    def result(self, specs: dict[str, NodeSpec], good_outputs: list[str]) -> ValidationResult:
        if self.missing:
            return ValidationResult(None, self.missing[0], self.node_errors)
        if not good_outputs:
            return ValidationResult(None, self._failed_outputs_error(), self.node_errors)
        keep = set().union(*(self.needs[out] for out in good_outputs))
        nodes = {nid: specs[nid] for nid in keep}
        workflow = Workflow(nodes=nodes, outputs=good_outputs, prompt=self.prompt, order=run_order(nodes))
        return ValidationResult(workflow, None, self.node_errors)

    def _failed_outputs_error(self) -> dict[str, Any]:
        problems = [
            f"node {nid}: {err['details']}" for nid, entry in self.node_errors.items() for err in entry["errors"]
        ]
        details = "; ".join(problems[:MAX_DETAILS_LISTED])
        if len(problems) > MAX_DETAILS_LISTED:
            details += f"; and {len(problems) - MAX_DETAILS_LISTED} more (see node_errors)"
        return _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)


# --- one node ----------------------------------------------------------------------------------------------------


def _validate_node(
    nid: str,
    cls: type[Node],
    raw: dict[str, Any],
    classes: dict[str, type[Node]],
    prompt: dict[str, Any],
    env: Folders | None,
) -> tuple[list[dict[str, Any]], NodeSpec]:
    """Check each declared input of one node (presence, link, literal), then the node's own `check_inputs`."""
    inputs = raw["inputs"]
    errors: list[dict[str, Any]] = []
    constants: dict[str, Any] = {}
    links: dict[str, Link] = {}
    for name, spec in cls.inputs.items():
        config = _echoed_config(spec, env)
        if name not in inputs:
            # As ComfyUI: a required input must be in the prompt even when it has a default (a misspelt or
            # deleted `seed` is an error, not a silent default).
            if not spec.optional:
                errors.append(_error(
                    "required_input_missing", "Required input is missing",
                    f"{name}: the required {spec.type} input of {cls.type_name} is missing",
                    input_name=name, input_config=config,
                ))
            continue
        value = inputs[name]
        if is_link(value):
            error, link = _check_link(name, spec, value, classes, prompt, config)
            if error is not None:
                errors.append(error)
            elif link is not None:
                links[name] = link
            continue
        try:
            constants[name] = spec.coerce(unwrap_literal(value), env)
        except InputError as exc:
            errors.append(
                _error(exc.type, exc.message, exc.details, input_name=name, input_config=config, received_value=value)
            )
    if not errors:
        errors.extend(_custom_checks(cls, constants, env))
    return errors, NodeSpec(nid, cls, raw["class_type"], raw["title"], constants, links)


def _echoed_config(spec: Input, env: Folders | None) -> list[Any] | None:
    """The input's declaration as errors echo it back (`input_config`)."""
    config = spec.object_info(env)
    if isinstance(config[0], list) and len(config[0]) > MAX_ECHOED_CHOICES:
        return None
    return config


def _check_link(
    name: str, spec: Input, value: list[Any], classes: dict[str, type[Node]], prompt: dict[str, Any], config: Any
) -> tuple[dict[str, Any] | None, Link | None]:
    """(error, None) for a bad link, (None, link) for a good one; (None, None) when the source's class is unknown
    (that error is reported on the source)."""
    src, slot = str(value[0]), value[1]

    def bad(message: str, details: str) -> tuple[dict[str, Any], None]:
        return _error("bad_linked_input", message, f"{name}: {details}", input_name=name, input_config=config,
                      received_value=value), None

    if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
        return bad("Bad linked input, must be a length-2 list of [node_id, slot_index]",
                   f"output index {slot!r} is not a non-negative integer")
    if src not in prompt:
        return bad("Bad linked input: the source node does not exist",
                   f"links to node {src!r}, which is not in the workflow")
    src_cls = classes.get(src)
    if src_cls is None:
        return None, None
    if slot >= len(src_cls.outputs):
        return bad("Bad linked input: the source node has no such output",
                   f"node {src} ({src_cls.type_name}) has {len(src_cls.outputs)} outputs, "
                   f"output index {slot} does not exist")
    received_type = src_cls.outputs[slot].type
    if not spec.accepts_link_from(received_type):
        return _error(
            "return_type_mismatch", "Return type mismatch between linked nodes",
            f"{name}: expected {spec.type}, but node {src} ({src_cls.type_name}) output {slot} is {received_type}",
            input_name=name, input_config=config, received_type=received_type, linked_node=[src, slot],
        ), None
    return None, Link(src, slot)


def _custom_checks(cls: type[Node], constants: dict[str, Any], env: Folders | None) -> list[dict[str, Any]]:
    """The node's own `check_inputs` over its literal inputs: one error per problem it names."""
    try:
        problems = cls.check_inputs(env, **constants) or {}
    except Exception as exc:
        return [_error("exception_during_inner_validation", "Exception when validating inner node",
                       f"{type(exc).__name__}: {exc}")]
    return [
        _error("custom_validation_failed", "Custom validation failed for node", f"{name}: {message}",
               input_name=name, received_value=constants.get(name))
        for name, message in problems.items()
    ]


def unknown_inputs(prompt: Any, registry: NodeRegistry) -> list[dict[str, Any]]:
    """Inputs of installed nodes that the node does not declare, each with the closest declared name.

    ComfyUI ignores such inputs and so does the server (clients may send extra keys); the CLI warns about them,
    because in a hand-edited file they are usually typos (`sed` for `seed`). Each item: node_id, class_type,
    input_name, suggestion (or None) and the node's input names.
    """
    found: list[dict[str, Any]] = []
    if not isinstance(prompt, dict):
        return found
    for key in sorted(prompt, key=lambda k: node_sort_key(str(k))):
        node = prompt[key]
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        cls = registry.get(node.get("class_type")) if isinstance(node.get("class_type"), str) else None
        if cls is None:
            continue
        names = list(cls.inputs)
        for name in node["inputs"]:
            if name not in cls.inputs:
                close = difflib.get_close_matches(str(name), names, n=1)
                found.append({"node_id": str(key), "class_type": node["class_type"], "input_name": name,
                              "suggestion": close[0] if close else None, "inputs": names})
    return found


def unknown_input_message(item: dict[str, Any]) -> str:
    """`node 3: unknown input 'sed' on KSampler; did you mean 'seed'?` (or the list of its inputs)."""
    text = f"node {item['node_id']}: unknown input {item['input_name']!r} on {item['class_type']}"
    if item["suggestion"]:
        return f"{text}; did you mean {item['suggestion']!r}?"
    return f"{text}; its inputs are: {', '.join(item['inputs']) or '(none)'}"


def format_validation(result: ValidationResult, prompt: dict[str, Any] | None = None) -> str:
    """A readable report for terminals: one block per failing node, one line per problem."""
    if result.ok and not result.node_errors:
        return "The workflow is valid."
    lines = []
    if result.error:
        lines.append(f"Invalid workflow: {result.error['message']}")
        if not result.node_errors and result.error.get("details"):
            lines.append(f"  {result.error['details']}")
    else:
        lines.append("Some outputs of the workflow are invalid and will not run:")
    for nid, entry in result.node_errors.items():
        title = ""
        if prompt and isinstance(prompt.get(nid), dict):
            title = _title(prompt[nid], entry.get("class_type"), None)
        lines.append(f"  node {nid} ({entry.get('class_type') or 'no class_type'}{', ' + repr(title) if title else ''}):")
        for err in entry["errors"]:
            lines.append(f"    - {err['message']}: {err['details']}")
        if entry["dependent_outputs"]:
            lines.append(f"    affects output nodes: {', '.join(entry['dependent_outputs'])}")
    return "\n".join(lines)
