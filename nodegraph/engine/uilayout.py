"""Lay an API prompt out as an editor (UI-format) workflow: the inverse of ``uiformat.ui_to_api``.

Used for the example workflows and ``nodegraph convert --to ui``. The result is a schema 0.4 workflow that
ComfyUI's editor and ours open: nodes placed in columns by their depth in the graph (sources on the left), widget
values in the editor's order (``uiwidgets``), "fixed" for seed controls and "image" for the upload button, so that
``ui_to_api(api_to_ui(p))`` gives back ``p``.
"""

from __future__ import annotations

from typing import Any

from .uiwidgets import MISSING, NodeInfo, is_widget, ordered_inputs, split_spec, widget_default, widget_layout
from .workflow import is_link, unwrap_literal

COLUMN_X, COLUMN_WIDTH, NODE_WIDTH = 40.0, 360.0, 320.0
TOP_Y, NODE_GAP = 40.0, 40
TITLE_HEIGHT, ROW_HEIGHT = 30, 26


def api_to_ui(prompt: dict, node_info: NodeInfo) -> dict:
    """Lay an API prompt out as a UI-format workflow (schema 0.4) that ComfyUI's editor and ours open.

    Nodes are placed in columns by their depth in the graph (sources on the left); widget values are written
    in the editor's order, with "fixed" for seed controls and the upload button's value, so that
    ``ui_to_api(api_to_ui(p))`` gives back ``p``. Raises ValueError for node types ``node_info`` does not know.
    """
    unknown = sorted({node.get("class_type") for node in prompt.values() if node_info(node.get("class_type")) is None})
    if unknown:
        raise ValueError(f"cannot lay out node types that are not installed: {', '.join(map(str, unknown))}")
    layout = _Layout(prompt, node_info)
    for column, nids in sorted(_columns(prompt).items()):
        y = TOP_Y
        for nid in nids:
            y += layout.add_node(nid, column, y) + NODE_GAP
    layout.add_outputs()
    return layout.document()


def _ui_ids(prompt: dict) -> dict[str, int]:
    """The editor's integer id of each node: a numeric id stays, the others get numbers after the largest."""
    numeric = [int(nid) for nid in prompt if str(nid).isdigit()]
    next_id = max(numeric, default=0) + 1
    ui_ids: dict[str, int] = {}
    for nid in prompt:
        if str(nid).isdigit():
            ui_ids[nid] = int(nid)
        else:
            ui_ids[nid], next_id = next_id, next_id + 1
    return ui_ids


def _columns(prompt: dict) -> dict[int, list[str]]:
    """Node ids by depth: 0 for nodes without links in, else one more than the deepest source."""

    def sources(nid: str) -> list[str]:
        return [str(v[0]) for v in prompt[nid].get("inputs", {}).values() if is_link(v)]

    depth: dict[str, int] = {}

    def depth_of(nid: str, trail: frozenset = frozenset()) -> int:
        if nid not in depth:
            if nid in trail:
                raise ValueError(f"the prompt has a cycle through node {nid}")
            depth[nid] = 1 + max((depth_of(s, trail | {nid}) for s in sources(nid) if s in prompt), default=-1)
        return depth[nid]

    columns: dict[int, list[str]] = {}
    for nid in prompt:
        columns.setdefault(depth_of(nid), []).append(nid)
    return columns


class _Layout:
    """The workflow being built: nodes and links in the editor's shapes."""

    def __init__(self, prompt: dict, node_info: NodeInfo):
        self.prompt = prompt
        self.node_info = node_info
        self.ui_ids = _ui_ids(prompt)
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.out_links: dict[tuple[str, int], list[int]] = {}  # (node id, output slot) -> link ids

    def add_node(self, nid: str, column: int, y: float) -> int:
        """Place one node at the top of the free space of its column; returns its height."""
        node = self.prompt[nid]
        info = self.node_info(node["class_type"])
        values = node.get("inputs", {})
        specs = dict(ordered_inputs(info, "required")) | dict(ordered_inputs(info, "optional"))
        inputs = self._input_slots(nid, specs, values)
        widgets_values = _widgets_values(info, specs, values)
        height = TITLE_HEIGHT + ROW_HEIGHT * (len(inputs) + len(widgets_values) + len(info.get("output", [])))
        title = (node.get("_meta") or {}).get("title") or info.get("display_name") or node["class_type"]
        entry: dict[str, Any] = {
            "id": self.ui_ids[nid],
            "type": node["class_type"],
            "pos": [COLUMN_X + COLUMN_WIDTH * column, y],
            "size": [NODE_WIDTH, float(height)],
            "flags": {},
            "order": len(self.nodes),
            "mode": 0,
            "inputs": inputs,
            "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets_values,
        }
        if title != info.get("display_name"):
            entry["title"] = title
        self.nodes.append(entry)
        return height

    def _input_slots(self, nid: str, specs: dict[str, Any], values: dict[str, Any]) -> list[dict[str, Any]]:
        """The node's input sockets: every non-widget input, and each widget input that a link feeds."""
        inputs: list[dict[str, Any]] = []
        for name, spec in specs.items():
            linked = is_link(values.get(name))
            if is_widget(spec) and not linked:
                continue
            kind, _ = split_spec(spec)
            slot: dict[str, Any] = {"name": name, "type": "COMBO" if isinstance(kind, list) else kind, "link": None}
            if is_widget(spec):
                slot["widget"] = {"name": name}
            if linked:
                slot["link"] = self._link(values[name], nid, len(inputs))
            inputs.append(slot)
        return inputs

    def _link(self, value: list[Any], nid: str, target_slot: int) -> int:
        """Record the link `value` ([source id, output slot]) into input `target_slot` of `nid`; returns its id."""
        src, src_slot = str(value[0]), int(value[1])
        link_id = len(self.links) + 1
        src_info = self.node_info(self.prompt[src]["class_type"]) if src in self.prompt else None
        out_type = (src_info or {}).get("output", ["*"] * (src_slot + 1))[src_slot]
        self.links.append([link_id, self.ui_ids.get(src, -1), src_slot, self.ui_ids[nid], target_slot, out_type])
        self.out_links.setdefault((src, src_slot), []).append(link_id)
        return link_id

    def add_outputs(self) -> None:
        """Each node's output sockets, with the links that leave them (known once every node is placed)."""
        prompt_id_of = {ui_id: nid for nid, ui_id in self.ui_ids.items()}
        for entry in self.nodes:
            nid = prompt_id_of[entry["id"]]
            info = self.node_info(self.prompt[nid]["class_type"])
            entry["outputs"] = [
                {"name": name, "type": kind, "links": self.out_links.get((nid, index), []), "slot_index": index}
                for index, (kind, name) in enumerate(zip(info.get("output", []), info.get("output_name", [])))
            ]

    def document(self) -> dict[str, Any]:
        return {
            "last_node_id": max((n["id"] for n in self.nodes), default=0),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0.0, 0.0]}},
            "version": 0.4,
        }


def _widgets_values(info: dict, specs: dict[str, Any], values: dict[str, Any]) -> list[Any]:
    """The node's ``widgets_values`` in the editor's order; a linked widget keeps its default."""
    widgets_values: list[Any] = []
    for slot in widget_layout(info):
        if slot.kind == "input":
            value = values.get(slot.name, widget_default(specs[slot.name]))
            if is_link(value):
                value = widget_default(specs[slot.name])
            value = unwrap_literal(value)
            widgets_values.append(None if value is MISSING else value)
        elif slot.kind in ("control", "legacy_control"):
            widgets_values.append("fixed")
        else:
            widgets_values.append("image")
    return widgets_values
