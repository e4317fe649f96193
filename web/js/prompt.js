// graphToPrompt: the editor's graph -> the API prompt the server runs (COMPAT 3.3).
//
// Input is the adapter's plain snapshot of the graph (no litegraph objects):
//   {nodes: [{id, type, title, mode, virtual: "reroute" | "note" | null, missing,
//             inputs: [{name, type, link: {originId, originSlot} | null}],
//             outputs: [{name, type}], widgets: [{name, value, serialize}]}]}
// Rules, as ComfyUI's editor applies them: muted (mode 2) and bypassed (mode 4) nodes are left out; a link from a
// bypassed node is followed to the input it passes through (same index first, then the first input whose type
// fits); reroutes pass their input through; notes produce nothing; widgets whose value must not reach the server
// (the control_after_generate mode, the upload button) are skipped; array values travel as {"__value__": [...]};
// a linked input overrides its widget; links to nodes left out of the prompt are removed.

import { typesCompatible } from "./node_defs.js";

export const MODE_NEVER = 2;
export const MODE_BYPASS = 4;

class LinkLoop extends Error {}

function bypassInputIndex(node, slot, wanted) {
  const inputs = node.inputs;
  if (inputs.length === 0) return -1;
  if (wanted === "*" || wanted === "" || wanted == null) return slot < inputs.length ? slot : 0;
  const outputType = node.outputs[slot]?.type ?? wanted;
  const fits = (kind) => typesCompatible(kind, outputType) && typesCompatible(kind, wanted);
  if (slot < inputs.length && fits(inputs[slot].type)) return slot;
  const exact = inputs.findIndex((input) => input.type === wanted);
  if (exact >= 0) return exact;
  return inputs.findIndex((input) => fits(input.type));
}

/** Build the prompt. Returns {output, problems: [{nodeId, message}]}. */
export function graphToPrompt(snapshot) {
  const byId = new Map(snapshot.nodes.map((node) => [String(node.id), node]));
  const problems = [];

  function resolveInput(node, slot, visited, wanted) {
    const key = `${node.id}:in:${slot}`;
    if (visited.has(key)) throw new LinkLoop(String(node.id));
    visited.add(key);
    const link = node.inputs[slot]?.link;
    if (!link) return null;
    const origin = byId.get(String(link.originId));
    if (!origin) return { nodeId: String(link.originId), slot: link.originSlot };
    return resolveOutput(origin, link.originSlot, wanted ?? node.inputs[slot].type, visited);
  }

  function resolveOutput(node, slot, wanted, visited) {
    const key = `${node.id}:out:${slot}`;
    if (visited.has(key)) throw new LinkLoop(String(node.id));
    visited.add(key);
    if (node.mode === MODE_BYPASS) {
      const index = bypassInputIndex(node, slot, wanted);
      return index < 0 ? null : resolveInput(node, index, visited, wanted);
    }
    if (node.virtual === "reroute") return slot < node.inputs.length ? resolveInput(node, 0, visited, wanted) : null;
    if (node.virtual) return null;
    return { nodeId: String(node.id), slot };
  }

  const output = {};
  for (const node of snapshot.nodes) {
    if (node.virtual || node.mode === MODE_NEVER || node.mode === MODE_BYPASS) continue;
    const inputs = {};
    for (const widget of node.widgets) {
      if (!widget.name || widget.serialize === false) continue;
      inputs[widget.name] = Array.isArray(widget.value) ? { __value__: widget.value } : widget.value;
    }
    node.inputs.forEach((input, slot) => {
      try {
        const source = resolveInput(node, slot, new Set());
        if (source) inputs[input.name] = [source.nodeId, source.slot];
      } catch (error) {
        if (!(error instanceof LinkLoop)) throw error;
        problems.push({ nodeId: String(node.id), message: `input '${input.name}' is part of a link loop` });
      }
    });
    output[String(node.id)] = { inputs, class_type: node.type, _meta: { title: node.title } };
  }
  for (const entry of Object.values(output)) {
    for (const [name, value] of Object.entries(entry.inputs)) {
      if (Array.isArray(value) && value.length === 2 && !(value[0] in output)) delete entry.inputs[name];
    }
  }
  return { output, problems };
}
