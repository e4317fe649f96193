// Workflow files in every shape users have: editor (UI) JSON, API prompt JSON, POST /prompt bodies, PNGs.
// Pure functions: recognise a document, and turn an API prompt into an editor workflow (positions are left to
// the editor's auto layout).

import { slotOrder } from "./node_defs.js";

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function isUiWorkflow(doc) {
  return isObject(doc) && Array.isArray(doc.nodes) && (Array.isArray(doc.links) || doc.links === undefined);
}

export function isApiPrompt(doc) {
  return isObject(doc) && Object.keys(doc).length > 0
    && Object.values(doc).every((node) => isObject(node) && typeof node.class_type === "string");
}

/**
 * What a parsed JSON document holds: {kind: "ui", workflow} | {kind: "api", prompt} (also from a POST /prompt
 * body, whose extra_pnginfo workflow is preferred when present) | {kind: "unknown"}.
 */
export function classify(doc) {
  if (isUiWorkflow(doc)) return { kind: "ui", workflow: doc };
  if (isObject(doc) && isObject(doc.prompt)) {
    const workflow = doc.extra_data?.extra_pnginfo?.workflow;
    if (isUiWorkflow(workflow)) return { kind: "ui", workflow };
    if (isApiPrompt(doc.prompt)) return { kind: "api", prompt: doc.prompt };
  }
  if (isApiPrompt(doc)) return { kind: "api", prompt: doc };
  return { kind: "unknown" };
}

function isLink(value) {
  return Array.isArray(value) && value.length === 2 && (typeof value[0] === "string" || typeof value[0] === "number")
    && Number.isInteger(value[1]);
}

/**
 * An API prompt -> a schema 0.4 editor workflow with the same node ids, widget values and links (positions
 * [0, 0]: lay it out after loading). `defs` is the Map from node_defs.describeAll. Nodes of unknown types are
 * kept with their link sockets, so the editor can show them as missing.
 * Returns {workflow, missing: [types]}.
 */
export function apiToWorkflow(prompt, defs) {
  const ids = Object.keys(prompt);
  const numeric = new Map(ids.map((id, i) => [id, /^\d+$/.test(id) ? Number(id) : 100000 + i]));
  const nodes = [];
  const links = [];
  const missing = new Set();
  const outputsByNode = new Map();
  let linkId = 0;

  for (const id of ids) {
    const entry = prompt[id];
    const def = defs.get(entry.class_type);
    const values = entry.inputs ?? {};
    const node = {
      id: numeric.get(id), type: entry.class_type, pos: [0, 0], flags: {}, order: nodes.length, mode: 0,
      inputs: [], outputs: [], properties: { "Node name for S&R": entry.class_type },
    };
    const title = entry._meta?.title;
    if (title && title !== def?.title) node.title = title;
    if (def) {
      node.outputs = def.outputs.map((output, slot) => ({ name: output.name, type: output.type, links: [], slot_index: slot }));
      node.inputs = slotOrder(def).map((input) => (input.widget
        ? { name: input.name, type: input.type, link: null, widget: { name: input.name } }
        : { name: input.name, type: input.type, link: null }));
      node.widgets_values = def.widgetOrder.map((slot) => {
        if (slot.role === "control") return "fixed";
        if (slot.role === "upload") return "image";
        const value = values[slot.name];
        const input = def.inputs.find((i) => i.name === slot.name);
        if (value === undefined || isLink(value)) return input.widget.value;
        return isObject(value) && "__value__" in value ? value.__value__ : value;
      });
    } else {
      missing.add(entry.class_type);
      node.inputs = Object.entries(values).filter(([, v]) => isLink(v)).map(([name]) => ({ name, type: "*", link: null }));
    }
    outputsByNode.set(id, node.outputs);
    nodes.push(node);
  }

  nodes.forEach((node, index) => {
    const entry = prompt[ids[index]];
    for (const [name, value] of Object.entries(entry.inputs ?? {})) {
      if (!isLink(value)) continue;
      const originId = String(value[0]);
      if (!(originId in prompt)) continue;
      const slot = node.inputs.findIndex((input) => input.name === name);
      if (slot < 0) continue;
      const outputs = outputsByNode.get(originId);
      while (outputs.length <= value[1]) outputs.push({ name: "", type: "*", links: [], slot_index: outputs.length });
      const type = outputs[value[1]].type ?? node.inputs[slot].type;
      linkId += 1;
      links.push([linkId, numeric.get(originId), value[1], node.id, slot, type]);
      node.inputs[slot].link = linkId;
      outputs[value[1]].links.push(linkId);
    }
  });

  const workflow = {
    last_node_id: Math.max(0, ...nodes.map((n) => n.id)),
    last_link_id: linkId,
    nodes,
    links,
    groups: [],
    config: {},
    extra: {},
    version: 0.4,
  };
  return { workflow, missing: [...missing] };
}

const UI_SUFFIX = ".ui.json";

/**
 * The server's example files, one entry per workflow: `NAME.ui.json` (laid out by hand) is preferred to
 * `NAME.json` (an API prompt, laid out automatically) when both exist. -> [{base, name, title}] by name.
 */
export function exampleEntries(files) {
  const chosen = new Map();
  for (const file of files ?? []) {
    const isUi = file.name.endsWith(UI_SUFFIX);
    const base = file.name.slice(0, -(isUi ? UI_SUFFIX.length : ".json".length));
    if (!chosen.has(base) || isUi) chosen.set(base, { base, name: file.name, title: file.title || base });
  }
  return [...chosen.values()].sort((a, b) => a.base.localeCompare(b.base));
}
