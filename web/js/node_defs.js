// Node definitions: turn `/api/object_info` records into the plain description the editor builds nodes from.
//
// Pure functions, no litegraph: what becomes a socket, what becomes a widget (and which kind, with which
// options), and in which order the widgets are saved in `widgets_values` (COMPAT 3.2 / 3.4). The order matters:
// ComfyUI's editor and ours must read each other's files the same way.

export const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
export const CONTROL_MODES = ["fixed", "increment", "decrement", "randomize"];
export const CONTROL_WIDGET = "control_after_generate";
export const UPLOAD_WIDGET = "upload";
// Older editors gave these INT inputs a control widget by name, before object_info declared it.
const LEGACY_SEED_NAMES = new Set(["seed", "noise_seed"]);

/** `[TYPE]` or `[TYPE, options]` -> [TYPE, options]. */
export function splitSpec(spec) {
  if (!Array.isArray(spec) || spec.length === 0) return [null, {}];
  const options = spec.length > 1 && spec[1] && typeof spec[1] === "object" && !Array.isArray(spec[1]) ? spec[1] : {};
  return [spec[0], options];
}

/** The choices of a combo spec, legacy `[[a, b], opts]` or `["COMBO", {options: [a, b]}]`; null if not a combo. */
export function comboChoices(spec) {
  const [kind, options] = splitSpec(spec);
  if (Array.isArray(kind)) return kind;
  if (kind === "COMBO") return Array.isArray(options.options) ? options.options : [];
  return null;
}

function isWidgetSpec(spec) {
  const [kind, options] = splitSpec(spec);
  if (options.forceInput) return false;
  return Array.isArray(kind) || WIDGET_TYPES.has(kind);
}

/** Decimal places needed to show `step` exactly (0.05 -> 2). */
function decimals(step) {
  if (!Number.isFinite(step) || step <= 0) return 0;
  const text = String(step);
  if (text.includes("e-")) return Number(text.split("e-")[1]);
  return text.includes(".") ? text.split(".")[1].length : 0;
}

/** The widget that edits one input spec: {kind, value, options}; null for socket-only inputs. */
export function widgetFor(name, spec) {
  if (!isWidgetSpec(spec)) return null;
  const [kind, options] = splitSpec(spec);
  const choices = comboChoices(spec);
  if (choices !== null) {
    const value = "default" in options ? options.default : choices[0] ?? "";
    return { kind: "combo", value, options: { values: choices, imageUpload: !!options.image_upload } };
  }
  if (kind === "INT" || kind === "FLOAT") {
    const isInt = kind === "INT";
    const step = Number(options.step ?? (isInt ? 1 : 0.5));
    // `round` (FLOAT) is the precision values are kept at; false turns rounding off, as in ComfyUI.
    const round = isInt ? 1 : options.round === false ? 0 : Number(options.round ?? 10 ** -decimals(step));
    const precision = isInt ? 0 : Math.max(decimals(step), decimals(round));
    const min = options.min ?? (isInt ? -Number.MAX_SAFE_INTEGER : -Infinity);
    const max = options.max ?? (isInt ? Number.MAX_SAFE_INTEGER : Infinity);
    const fallback = Math.min(Math.max(0, min), max);
    const control = options.control_after_generate ?? (isInt && LEGACY_SEED_NAMES.has(name) ? true : undefined);
    return {
      kind: "number",
      value: options.default ?? fallback,
      options: { min, max, step, round, precision, integer: isInt, display: options.display },
      control: control ? (typeof control === "string" && CONTROL_MODES.includes(control) ? control : "randomize")
        : null,
    };
  }
  if (kind === "BOOLEAN") {
    return { kind: "toggle", value: !!(options.default ?? false),
      options: { on: options.label_on ?? "true", off: options.label_off ?? "false" } };
  }
  // STRING
  return { kind: options.multiline ? "multiline" : "text", value: options.default ?? "",
    options: { placeholder: options.placeholder ?? "" } };
}

function orderedInputs(record, section) {
  const specs = (record.input ?? {})[section] ?? {};
  const order = (record.input_order ?? {})[section] ?? Object.keys(specs);
  return order.filter((name) => name in specs).map((name) => [name, specs[name]]);
}

/** True when a socket type accepts a link of type `b` (wildcards and comma unions, like litegraph). */
export function typesCompatible(a, b) {
  if (a === b || [a, b].some((t) => t === "*" || t === "" || t == null || t === 0)) return true;
  const left = String(a).toLowerCase().split(",").map((s) => s.trim());
  const right = String(b).toLowerCase().split(",").map((s) => s.trim());
  return left.some((x) => right.some((y) => x === y || x === "*" || y === "*"));
}

/**
 * One object_info record -> the editor's node description:
 * {type, title, category, description, outputNode, deprecated, experimental, aliasOf, searchAliases,
 *  inputs: [{name, type, optional, tooltip, widget: {kind, value, options, control} | null}],
 *  outputs: [{name, type, isList, tooltip}],
 *  widgetOrder: [{name, role: "input"|"control"|"upload", input?}]}  (the `widgets_values` layout)
 */
export function describeNode(type, record) {
  const inputs = [];
  const widgetOrder = [];
  for (const section of ["required", "optional"]) {
    let upload = false;
    for (const [name, spec] of orderedInputs(record, section)) {
      const [kind, options] = splitSpec(spec);
      const widget = widgetFor(name, spec);
      const socketType = comboChoices(spec) !== null ? "COMBO" : Array.isArray(kind) ? "COMBO" : String(kind);
      upload ||= !!options.image_upload;
      inputs.push({ name, type: socketType, optional: section === "optional", tooltip: options.tooltip ?? "",
        widget });
      if (widget) {
        widgetOrder.push({ name, role: "input" });
        if (widget.control) widgetOrder.push({ name: CONTROL_WIDGET, role: "control", input: name });
      }
    }
    // ComfyUI's editor adds the upload button after the required inputs, and saves its value ("image").
    if (section === "required" && upload) widgetOrder.push({ name: UPLOAD_WIDGET, role: "upload" });
  }
  const outputTypes = record.output ?? [];
  const outputs = outputTypes.map((outType, i) => ({
    name: (record.output_name ?? [])[i] ?? String(outType),
    type: Array.isArray(outType) ? "COMBO" : String(outType),
    isList: !!(record.output_is_list ?? [])[i],
    tooltip: (record.output_tooltips ?? [])[i] ?? "",
  }));
  return {
    type,
    title: record.display_name || record.name || type,
    category: record.category || "other",
    description: record.description ?? "",
    outputNode: !!record.output_node,
    deprecated: !!record.deprecated,
    experimental: !!record.experimental,
    pythonModule: record.python_module ?? "",
    // Another name of the same node (CheckpointLoaderSimple for LoadCheckpoint): kept so that workflows using it
    // load and run, left out of the library and search, which find the primary by this name instead.
    aliasOf: typeof record.alias_of === "string" ? record.alias_of : null,
    searchAliases: Array.isArray(record.search_aliases) ? record.search_aliases.map(String) : [],
    inputs,
    outputs,
    widgetOrder,
  };
}

/**
 * The whole object_info answer -> Map(type -> description), skipping records that cannot be described. Every
 * alias's name is among its primary's `searchAliases`, even where the server listed it only on the alias.
 */
export function describeAll(objectInfo) {
  const defs = new Map();
  for (const [type, record] of Object.entries(objectInfo ?? {})) {
    if (record && typeof record === "object") defs.set(type, describeNode(type, record));
  }
  for (const def of defs.values()) {
    const primary = def.aliasOf ? defs.get(def.aliasOf) : null;
    if (primary && !primary.searchAliases.includes(def.type)) primary.searchAliases.push(def.type);
  }
  return defs;
}

/**
 * Saved `widgets_values` (a list in the layout above, or an object keyed by input name) -> the values of the
 * node's widgets in `widgetOrder`, with `undefined` where the file has none (the widget keeps its default).
 * A legacy file without the control word after a seed simply has no value for the control widget.
 */
export function alignWidgetValues(def, saved) {
  const order = def.widgetOrder;
  if (saved && typeof saved === "object" && !Array.isArray(saved)) {
    return order.map((slot) => (slot.role === "input" ? saved[slot.name] : undefined));
  }
  if (!Array.isArray(saved)) return order.map(() => undefined);
  const out = [];
  let position = 0;
  for (const slot of order) {
    if (position >= saved.length) {
      out.push(undefined);
      continue;
    }
    const value = saved[position];
    if (slot.role === "control" && !(typeof value === "string" && CONTROL_MODES.includes(value))) {
      out.push(undefined); // a file written without the control value: the next value belongs to the next input
      continue;
    }
    out.push(value);
    position += 1;
  }
  return out;
}

/**
 * The input slots a node of this description has, in order: the link-only sockets first, then one socket per
 * widget input (linking to it overrides the widget). Saved workflows keep their own slot lists; this is the
 * layout of a new node and of API-format imports.
 */
export function slotOrder(def) {
  return [...def.inputs.filter((input) => !input.widget), ...def.inputs.filter((input) => input.widget)];
}
