// The one module that talks to litegraph (vendored @comfyorg/litegraph 0.17.2). Everything else in the editor
// works with plain data: node descriptions from node_defs.js, workflow JSON, node ids, and the snapshot that
// prompt.js turns into an API prompt. Keeping litegraph behind this file means a litegraph change (it is frozen
// upstream) touches one module.

import {
  BaseWidget,
  LGraph,
  LGraphCanvas,
  LGraphNode,
  LiteGraph,
  RenderShape,
} from "../vendor/litegraph/litegraph.es.js";
import { nextValue } from "./control.js";
import { CONTROL_MODES, CONTROL_WIDGET, alignWidgetValues, slotOrder, typesCompatible } from "./node_defs.js";

// Colours per socket / link type (the family ComfyUI users know).
const TYPE_COLORS = {
  MODEL: "#b39ddb",
  CLIP: "#ffd500",
  VAE: "#ff6e6e",
  LATENT: "#ff9cf9",
  IMAGE: "#64b5f6",
  TEST_IMAGE: "#64b5f6",
  MASK: "#81c784",
  CONDITIONING: "#ffa931",
  CONTROL_NET: "#00d78d",
  INT: "#7fd1a8",
  FLOAT: "#8fd1e0",
  STRING: "#c7e08f",
  BOOLEAN: "#e0a98f",
  COMBO: "#c0c0d0",
};

const THEME = {
  canvas: "#16181d",
  nodeTitle: "#2c3039",
  nodeBody: "#22252c",
  nodeTitleText: "#c9ccd3",
  selectedTitleText: "#ffffff",
  widgetBg: "#1a1c22",
  widgetOutline: "#3a3f4a",
  widgetText: "#e2e4e9",
  widgetLabel: "#9096a3",
  link: "#8a93a6",
  running: "#3fd07f",
  error: "#ff5c5c",
  font: "Inter, 'Segoe UI', system-ui, sans-serif",
};

const NODE_MIN_WIDTH = 240;
const CONTROL_NODE_MIN_WIDTH = 300;
const IMAGE_AREA_MIN = 200;
// Below this zoom litegraph draws nodes without any text (its "low quality" mode; its default is 0.6). At 0.5 the
// 14 px titles are 7 px high, about the smallest that still reads. The example workflows and autoLayout are
// compact enough to be fitted above it (about 0.7 for txt2img on a 1280x720 window with the side panel open).
const LOW_QUALITY_ZOOM = 0.5;
// The largest zoom "Fit to view" uses: a graph of two nodes is not blown up.
const FIT_MAX_ZOOM = 1.1;

function applyTheme() {
  Object.assign(LiteGraph, {
    NODE_DEFAULT_COLOR: THEME.nodeTitle,
    NODE_DEFAULT_BGCOLOR: THEME.nodeBody,
    NODE_DEFAULT_BOXCOLOR: "#59606e",
    NODE_TITLE_COLOR: THEME.nodeTitleText,
    NODE_SELECTED_TITLE_COLOR: THEME.selectedTitleText,
    NODE_TEXT_COLOR: "#b9bdc7",
    NODE_TEXT_SIZE: 14,
    NODE_SUBTEXT_SIZE: 12,
    NODE_FONT: THEME.font,
    DEFAULT_FONT: THEME.font,
    GROUP_FONT: THEME.font,
    WIDGET_BGCOLOR: THEME.widgetBg,
    WIDGET_OUTLINE_COLOR: THEME.widgetOutline,
    WIDGET_TEXT_COLOR: THEME.widgetText,
    WIDGET_SECONDARY_TEXT_COLOR: THEME.widgetLabel,
    LINK_COLOR: THEME.link,
    NODE_WIDGET_HEIGHT: 22,
    release_link_on_empty_shows_menu: true,
    middle_click_slot_add_default_node: false,
    snaps_for_comfy: true,
  });
  for (const [type, color] of Object.entries(TYPE_COLORS)) LGraphCanvas.link_type_colors[type] = color;
  LiteGraph.isValidConnection = (a, b) => typesCompatible(a, b);
}

/** A multiline text box drawn on the canvas; a click opens an editor over it (see Editor.editText). */
class MultilineWidget extends BaseWidget {
  constructor(widget, node) {
    super(widget, node);
    this.type = "multiline";
    this.value = widget.value ?? "";
  }

  computeLayoutSize() {
    return { minHeight: 64, maxHeight: 240, minWidth: 160 };
  }

  drawWidget(ctx, { width }) {
    const margin = BaseWidget.margin;
    const height = this.computedHeight ?? 64;
    const { y } = this;
    ctx.save();
    ctx.fillStyle = THEME.widgetBg;
    ctx.strokeStyle = this.node.ngInvalidWidgets?.has(this.name) ? THEME.error : THEME.widgetOutline;
    ctx.beginPath();
    ctx.roundRect(margin, y, width - margin * 2, height - 4, 6);
    ctx.fill();
    ctx.stroke();
    ctx.clip();
    const text = String(this.value ?? "");
    // An empty box shows its placeholder (or the input's name) dimmed and in italics, so it never reads as text.
    ctx.font = `${text ? "" : "italic "}12px ${THEME.font}`;
    ctx.fillStyle = text ? THEME.widgetText : THEME.widgetLabel;
    const lines = wrapText(ctx, text || this.options?.placeholder || this.name, width - margin * 2 - 14);
    lines.forEach((line, i) => ctx.fillText(line, margin + 7, y + 16 + i * 15));
    ctx.restore();
  }

  onClick({ node, canvas }) {
    canvas.ngEditor?.editText(node, this);
  }
}

function wrapText(ctx, text, maxWidth) {
  const lines = [];
  for (const paragraph of text.split("\n")) {
    let line = "";
    for (const word of paragraph.split(/(\s+)/)) {
      const candidate = line + word;
      if (ctx.measureText(candidate).width > maxWidth && line) {
        lines.push(line.trimEnd());
        line = word.trimStart();
      } else {
        line = candidate;
      }
    }
    lines.push(line);
  }
  return lines;
}

function roundTo(value, round) {
  if (!round) return value;
  const rounded = Math.round(value / round) * round;
  const digits = Math.max(0, -Math.floor(Math.log10(round)) + 1);
  return Number(rounded.toFixed(Math.min(digits, 12)));
}

/** Add the widgets of one node description, in the `widgets_values` order. */
function addWidgets(node, def, editor) {
  const byName = new Map(def.inputs.map((input) => [input.name, input]));
  node.ngControls = [];
  let lastTarget = null;
  for (const slot of def.widgetOrder) {
    if (slot.role === "control") {
      const control = node.addWidget("combo", CONTROL_WIDGET, lastTarget.spec.control, () => {}, {
        values: CONTROL_MODES, serialize: false,
      });
      control.label = "control after generate";
      node.ngControls.push({ control, target: lastTarget.widget });
      continue;
    }
    if (slot.role === "upload") {
      const combo = node.widgets?.find((w) => def.inputs.some((i) => i.name === w.name && i.widget?.options?.imageUpload));
      const button = node.addWidget("button", "upload", "image", () => editor.hooks.onUpload?.(node.id, combo?.name),
        { serialize: false });
      button.label = "choose file to upload";
      continue;
    }
    const input = byName.get(slot.name);
    const spec = input.widget;
    let widget;
    if (spec.kind === "number") {
      const o = spec.options;
      const type = o.display === "slider" ? "slider" : "number";
      widget = node.addWidget(type, input.name, spec.value, (value) => {
        widget.value = Math.min(Math.max(roundTo(Number(value), o.integer ? 1 : o.round), o.min), o.max);
      }, { min: o.min, max: o.max, step: o.step * 10, step2: o.step, precision: o.precision, round: o.round });
    } else if (spec.kind === "combo" && spec.options.imageUpload) {
      // An input image picker: the node shows the chosen picture.
      widget = node.addWidget("combo", input.name, spec.value, (value) => editor.showInputImage(node.id, value),
        { values: spec.options.values });
      node.ngInputImageWidget = widget;
    } else if (spec.kind === "combo") {
      widget = node.addWidget("combo", input.name, spec.value, () => {}, { values: spec.options.values });
    } else if (spec.kind === "toggle") {
      widget = node.addWidget("toggle", input.name, spec.value, () => {}, { on: spec.options.on, off: spec.options.off });
    } else if (spec.kind === "multiline") {
      widget = node.addCustomWidget(new MultilineWidget({ name: input.name, value: spec.value, type: "multiline",
        options: { placeholder: spec.options.placeholder } }, node));
    } else {
      widget = node.addWidget("text", input.name, spec.value, () => {}, {});
    }
    if (input.tooltip) widget.tooltip = input.tooltip;
    lastTarget = { widget, spec };
  }
}

/** The socket of a widget input, so a link can drive the widget (ComfyUI's "widget input"). */
function widgetSocket(input) {
  return { widget: { name: input.name } };
}

function makeNodeClass(def, editor) {
  class DefinedNode extends LGraphNode {
    static title = def.title;
    static category = def.category;
    static comfyClass = def.type;
    static nodeDef = def;

    constructor(title) {
      super(title ?? def.title);
      this.comfyClass = def.type;
      this.serialize_widgets = true;
      this.widgets = []; // saved as "widgets_values": [] even without widgets, as ComfyUI does
      for (const input of slotOrder(def)) {
        if (input.widget) {
          this.addInput(input.name, input.type, widgetSocket(input));
          continue;
        }
        const options = input.optional ? { shape: RenderShape.HollowCircle } : {};
        const slot = this.addInput(input.name, input.type, options);
        if (input.tooltip) slot.tooltip = input.tooltip;
      }
      for (const output of def.outputs) {
        const slot = this.addOutput(output.name, output.type, output.isList ? { shape: RenderShape.GRID } : {});
        if (output.tooltip) slot.tooltip = output.tooltip;
      }
      addWidgets(this, def, editor);
      const size = this.computeSize();
      // Text boxes get room to show a prompt, a "control after generate" row room for its label; other nodes
      // take what their slots and widgets need.
      const text = this.widgets.some((w) => w instanceof MultilineWidget);
      const minWidth = text ? 320 : this.ngControls.length ? CONTROL_NODE_MIN_WIDTH : NODE_MIN_WIDTH;
      this.setSize([Math.max(size[0], minWidth), size[1] + (text ? 40 : 0)]);
    }

    configure(info) {
      const values = alignWidgetValues(def, info.widgets_values);
      super.configure({ ...info, widgets_values: undefined });
      (this.widgets ?? []).forEach((widget, i) => {
        if (values[i] !== undefined) widget.value = values[i];
      });
      if (this.ngInputImageWidget) editor.showInputImage(this.id, this.ngInputImageWidget.value);
      // Files from older editors list only linked sockets: give every widget its socket back, after them.
      for (const input of def.inputs) {
        if (input.widget && !this.inputs.some((slot) => slot.name === input.name)) {
          this.addInput(input.name, input.type, widgetSocket(input));
        }
      }
    }

    onDrawForeground(ctx) {
      editor.drawNodeExtras(this, ctx);
    }

    onAdded() {
      if (this.ngInputImageWidget?.value) editor.showInputImage(this.id, this.ngInputImageWidget.value);
    }

    getExtraMenuOptions(canvas, options) {
      if (this.ngImages?.length) {
        options.push({ content: "Open image", callback: () => editor.hooks.onOpenImage?.(this.ngImages[0].src) });
      }
      return options;
    }
  }
  return DefinedNode;
}

// Frontend-only helper nodes that ComfyUI workflows use: notes (text on the canvas) and reroutes.
function registerHelpers(editor) {
  class NoteNode extends LGraphNode {
    static title = "Note";
    static category = "utils";
    constructor(title) {
      super(title ?? "Note");
      this.ngVirtual = "note";
      this.serialize_widgets = true;
      this.isVirtualNode = true;
      this.color = "#3d3a24";
      this.bgcolor = "#2f2c1b";
      this.addCustomWidget(new MultilineWidget({ name: "text", value: "", type: "multiline", options: {} }, this));
      this.setSize([320, 140]);
    }
  }
  class MarkdownNoteNode extends NoteNode {
    static title = "Markdown Note";
  }
  class RerouteNode extends LGraphNode {
    static title = "Reroute";
    static category = "utils";
    constructor(title) {
      super(title ?? "Reroute");
      this.ngVirtual = "reroute";
      this.isVirtualNode = true;
      this.addInput("", "*");
      this.addOutput("", "*");
      this.setSize([90, 26]);
    }
    onConnectionsChange() {
      // Take the type of whatever feeds it, so it only accepts fitting consumers.
      const link = this.inputs[0].link != null ? this.graph?._links.get(this.inputs[0].link) : null;
      this.outputs[0].type = link ? link.type : "*";
    }
  }
  for (const [type, cls] of [["Note", NoteNode], ["MarkdownNote", MarkdownNoteNode], ["Reroute", RerouteNode]]) {
    cls.nodeDef = null;
    LiteGraph.registerNodeType(type, cls);
    cls.category = "utils";
  }
}

export class Editor {
  /**
   * `hooks`: callbacks into the app, all optional:
   *   onSearch({clientX, clientY, position, filter}) - open the node search; filter {type, direction} or null
   *   onUpload(nodeId, widgetName)                   - pick and upload an image into a combo
   *   onOpenImage(url)                               - show an image large
   *   onChange()                                     - the graph changed (debounce on the caller's side)
   *   inputImageUrl(name)                            - URL of a file of the input folder, to show it
   */
  constructor(canvasElement, hooks = {}) {
    applyTheme();
    this.hooks = hooks;
    this.defs = new Map();
    this.element = canvasElement;
    this.graph = new LGraph();
    this.canvas = new LGraphCanvas(canvasElement, this.graph, { skip_render: false });
    this.canvas.ngEditor = this;
    Object.assign(this.canvas, {
      background_image: null,
      clear_background_color: THEME.canvas,
      render_canvas_border: false,
      render_shadows: false,
      render_connections_border: false,
      show_info: false,
      connections_width: 3,
      round_radius: 8,
      links_render_mode: LiteGraph.SPLINE_LINK,
      default_link_color: THEME.link,
      low_quality_zoom_threshold: LOW_QUALITY_ZOOM,
    });
    this.canvas.default_connection_color_byType = { ...TYPE_COLORS };
    this.canvas.onDrawBackground = (ctx, area) => this.#drawGrid(ctx, area);
    // after every node: a node's error note below it is drawn over the nodes beneath, never hidden by them
    this.canvas.onDrawForeground = (ctx) => this.#drawErrorNotes(ctx);
    this.canvas.showSearchBox = (event, context) => this.#openSearch(event, context);
    this.canvas.showConnectionMenu = (options) => this.#openSearch(options.e, options);
    // The search opens on the browser's own double-click (litegraph times clicks itself, which a busy machine
    // can miss): on empty canvas only.
    this.canvas.allow_searchbox = false;
    canvasElement.addEventListener("dblclick", (event) => {
      const [x, y] = this.toGraph(event.clientX, event.clientY);
      if (!this.graph.getNodeOnPos(x, y) && !this.graph.getGroupOnPos(x, y)) this.#openSearch(event, null);
    });
    registerHelpers(this);
    this.#watchSize();
    this.running = null;
    this.textEditor = null;
  }

  // --- node types ----------------------------------------------------------------------------------------------

  /** Register (or replace) node types from node_defs.describeAll(); existing nodes keep their values. */
  setNodeDefs(defs) {
    for (const type of this.defs.keys()) {
      if (!defs.has(type)) LiteGraph.unregisterNodeType(type);
    }
    this.defs = defs;
    for (const [type, def] of defs) {
      const registered = LiteGraph.registered_node_types[type];
      if (registered) LiteGraph.unregisterNodeType(type);
      const cls = makeNodeClass(def, this);
      LiteGraph.registerNodeType(type, cls);
      cls.category = def.category; // registerNodeType derives it from the type name; ours is the definition's
      // An alias type stays registered (workflows name it) but out of litegraph's Add Node menu: the primary is there.
      cls.skip_list = !!def.aliasOf && defs.has(def.aliasOf);
    }
    // Combo choices (model files, input images) may have changed: refresh the lists of existing nodes.
    for (const node of this.graph._nodes) {
      const def = defs.get(node.comfyClass);
      if (!def) continue;
      for (const widget of node.widgets ?? []) {
        const input = def.inputs.find((i) => i.name === widget.name);
        if (input?.widget?.kind === "combo") widget.options.values = input.widget.options.values;
      }
    }
  }

  // --- workflows -----------------------------------------------------------------------------------------------

  /** Load a UI-format workflow (schema 0.4 or 1). Returns {missing: [types not installed]}. */
  loadWorkflow(workflow) {
    this.closeTextEditor();
    this.graph.clear();
    const data = structuredClone(workflow);
    this.graph.configure(data);
    const missing = new Set();
    for (const node of this.graph._nodes) {
      if (node.last_serialization && !node.comfyClass && !node.ngVirtual) {
        node.ngMissing = true;
        node.title = `${node.last_serialization.type} (not installed)`;
        node.color = "#5a2626";
        node.bgcolor = "#3a1e1e";
        missing.add(node.last_serialization.type);
      }
    }
    const ds = workflow?.extra?.ds;
    if (ds && Array.isArray(ds.offset) && Number.isFinite(ds.scale)) {
      this.canvas.ds.offset = [...ds.offset];
      this.canvas.ds.scale = ds.scale;
    } else {
      this.fitView();
    }
    this.canvas.setDirty(true, true);
    return { missing: [...missing] };
  }

  /** The UI-format workflow (schema 0.4), as ComfyUI's editor saves it. */
  serializeWorkflow() {
    const data = this.graph.serialize();
    data.extra = { ...(data.extra ?? {}), ds: { scale: this.canvas.ds.scale, offset: [...this.canvas.ds.offset] } };
    data.version = 0.4;
    return JSON.parse(JSON.stringify(data));
  }

  clear() {
    this.closeTextEditor();
    this.graph.clear();
    this.canvas.ds.offset = [0, 0];
    this.canvas.ds.scale = 1;
    this.canvas.setDirty(true, true);
  }

  /** Plain description of the graph for prompt.js. */
  snapshot() {
    const links = this.graph._links;
    const nodes = [...this.graph._nodes].sort((a, b) => Number(a.id) - Number(b.id)).map((node) => ({
      id: node.id,
      type: node.comfyClass ?? node.last_serialization?.type ?? node.type,
      title: node.getTitle?.() ?? node.title,
      mode: node.mode ?? 0,
      virtual: node.ngVirtual ?? null,
      missing: !!node.ngMissing,
      inputs: (node.inputs ?? []).map((input) => {
        const link = input.link != null ? links.get(input.link) : null;
        return { name: input.name, type: input.type,
          link: link ? { originId: link.origin_id, originSlot: link.origin_slot } : null };
      }),
      outputs: (node.outputs ?? []).map((output) => ({ name: output.name, type: output.type })),
      widgets: node.ngVirtual ? [] : (node.widgets ?? []).map((widget) => ({
        name: widget.name, value: widget.value,
        serialize: widget.options?.serialize !== false && widget.type !== "button",
      })),
    }));
    return { nodes };
  }

  /** Apply every control_after_generate mode once (after a prompt was queued). */
  applyControlsAfterQueue() {
    for (const node of this.graph._nodes) {
      if (node.mode === 2 || node.mode === 4) continue;
      for (const { control, target } of node.ngControls ?? []) {
        if (node.getSlotFromWidget?.(target)?.link != null) continue;
        const options = target.type === "combo" ? { values: target.options.values }
          : { min: target.options.min, max: target.options.max, step: target.options.step2 };
        target.value = nextValue(control.value, target.value, options);
      }
    }
    this.canvas.setDirty(true, false);
  }

  // --- building ------------------------------------------------------------------------------------------------

  /** Add a node of `type` at canvas position `position` ([x, y] graph space); link it per `context`. */
  addNode(type, position, context = null) {
    const node = LiteGraph.createNode(type);
    if (!node) throw new Error(`unknown node type ${type}`);
    node.pos = this.#onScreen([position[0], position[1]], node.size);
    this.graph.add(node);
    if (context?.nodeFrom && context.slotFrom) {
      const slot = context.nodeFrom.outputs.indexOf(context.slotFrom);
      context.nodeFrom.connectByType(slot, node, context.slotFrom.type);
    } else if (context?.nodeTo && context.slotTo) {
      const slot = context.nodeTo.inputs.indexOf(context.slotTo);
      context.nodeTo.connectByTypeOutput(slot, node, context.slotTo.type);
    }
    this.canvas.setDirty(true, true);
    return node.id;
  }

  /** `pos` moved (as little as needed) so that a node of `size`, title bar included, lies inside the visible
   * canvas: a node added near an edge lands whole on screen. A node larger than the view keeps its top left. */
  #onScreen(pos, size) {
    const [left, top, width, height] = this.canvas.visible_area;
    const margin = 12 / this.canvas.ds.scale;
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const x = Math.max(left + margin, Math.min(pos[0], left + width - margin - size[0]));
    const y = Math.max(top + margin + title, Math.min(pos[1], top + height - margin - size[1]));
    return [x, y];
  }

  /** Plain facts about one node for the UI and tests: type, title, pos, size, widgets, links, state. */
  nodeInfo(id) {
    const node = this.graph.getNodeById(id);
    if (!node) return null;
    return {
      id: node.id,
      type: node.comfyClass ?? node.type,
      title: node.title,
      pos: [...node.pos],
      size: [...node.size],
      mode: node.mode,
      widgets: Object.fromEntries((node.widgets ?? []).filter((w) => w.type !== "button").map((w) => [w.name, w.value])),
      inputs: (node.inputs ?? []).map((i) => ({ name: i.name, type: i.type, linked: i.link != null })),
      outputs: (node.outputs ?? []).map((o) => ({ name: o.name, type: o.type, links: (o.links ?? []).length })),
      errors: node.ngErrors ?? null,
      images: (node.ngImages ?? []).map((img) => img.src),
      text: node.ngText ?? null,
      preview: !!node.ngPreview,
      running: this.running === node,
      progress: node.ngProgress ?? null,
    };
  }

  /** {node id: image URLs} of the result images shown on nodes (not input images, not previews). */
  resultImages() {
    const shown = {};
    for (const node of this.graph._nodes) {
      if (node.ngImages?.length && !node.ngInputImageWidget) shown[node.id] = node.ngImages.map((img) => img.src);
    }
    return shown;
  }

  nodeIds() {
    return this.graph._nodes.map((node) => node.id);
  }

  setWidgetValue(id, name, value) {
    const widget = this.graph.getNodeById(id)?.widgets?.find((w) => w.name === name);
    if (!widget) throw new Error(`node ${id} has no widget ${name}`);
    widget.value = value;
    if (widget === this.graph.getNodeById(id).ngInputImageWidget) this.showInputImage(id, value);
    this.canvas.setDirty(true, false);
  }

  /** Screen (client) coordinates of a node's slot centre, or of a widget's centre: for tests and tours. */
  screenPoint(id, what) {
    const node = this.graph.getNodeById(id);
    // Draw a frame now: slot and widget positions and hit areas are computed while drawing.
    this.canvas.draw(true, true);
    let point;
    if (what.input !== undefined || what.output !== undefined) {
      const isInput = what.input !== undefined;
      const slots = isInput ? node.inputs : node.outputs;
      const key = isInput ? what.input : what.output;
      const index = typeof key === "number" ? key : slots.findIndex((s) => s.name === key);
      point = node.getConnectionPos(isInput, index);
    } else if (what.widget !== undefined) {
      const widget = node.widgets.find((w) => w.name === what.widget);
      point = [node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + (widget.computedHeight ?? 24) / 2];
    } else {
      point = [node.pos[0] + node.size[0] / 2, node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2];
    }
    return this.toScreen(point);
  }

  toScreen(point) {
    const [x, y] = this.canvas.ds.convertOffsetToCanvas(point);
    const rect = this.element.getBoundingClientRect();
    return [rect.left + x, rect.top + y];
  }

  toGraph(clientX, clientY) {
    const rect = this.element.getBoundingClientRect();
    return this.canvas.ds.convertCanvasToOffset([clientX - rect.left, clientY - rect.top]);
  }

  /**
   * Lay nodes out left to right by link depth (for API-format imports, which carry no positions). A column short
   * enough to fit under its left neighbour within the tallest column's height is stacked there (VAE Decode over
   * Save Image, say): fewer columns keep a usual graph wide enough to read when fitted on a laptop screen.
   */
  autoLayout() {
    const nodes = this.graph._nodes;
    const depth = new Map();
    const depthOf = (node, seen = new Set()) => {
      if (depth.has(node.id)) return depth.get(node.id);
      if (seen.has(node.id)) return 0;
      seen.add(node.id);
      let d = 0;
      for (const input of node.inputs ?? []) {
        const link = input.link != null ? this.graph._links.get(input.link) : null;
        const origin = link ? this.graph.getNodeById(link.origin_id) : null;
        if (origin) d = Math.max(d, depthOf(origin, seen) + 1);
      }
      depth.set(node.id, d);
      return d;
    };
    const byDepth = [];
    for (const node of [...nodes].sort((a, b) => Number(a.id) - Number(b.id))) {
      (byDepth[depthOf(node)] ??= []).push(node);
    }
    const gap = 40; // between stacked nodes; columns are further apart, so that their links show
    const columnGap = 70;
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const heightOf = (column) => column.reduce((sum, node) => sum + node.size[1] + title, 0) + gap * (column.length - 1);
    const filled = byDepth.filter(Boolean);
    const tallest = Math.max(0, ...filled.map(heightOf));
    const columns = [];
    for (const column of filled) {
      const last = columns.at(-1);
      if (last && heightOf(last) + gap + heightOf(column) <= tallest) last.push(...column);
      else columns.push([...column]);
    }
    let x = 0;
    for (const column of columns) {
      let y = 0;
      let width = 0;
      for (const node of column) {
        node.pos = [x, y + title];
        y += node.size[1] + title + gap;
        width = Math.max(width, node.size[0]);
      }
      x += width + columnGap;
    }
    this.fitView();
  }

  /** Show the whole graph, centred, as large as the canvas allows (up to FIT_MAX_ZOOM). */
  fitView() {
    const nodes = this.graph._nodes;
    if (!nodes.length) {
      this.canvas.ds.offset = [0, 0];
      this.canvas.ds.scale = 1;
      return;
    }
    let [left, top, right, bottom] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const node of nodes) {
      left = Math.min(left, node.pos[0]);
      top = Math.min(top, node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT);
      right = Math.max(right, node.pos[0] + node.size[0]);
      bottom = Math.max(bottom, node.pos[1] + node.size[1]);
    }
    const rect = this.element.getBoundingClientRect();
    const margin = 32; // screen pixels: room for links that loop out of a node stacked over its consumer
    const scale = Math.min(FIT_MAX_ZOOM, (rect.width - margin * 2) / (right - left),
      (rect.height - margin * 2) / (bottom - top));
    const ds = this.canvas.ds;
    ds.scale = Math.max(0.25, scale);
    ds.offset = [
      (rect.width / ds.scale - (right - left)) / 2 - left,
      (rect.height / ds.scale - (bottom - top)) / 2 - top,
    ];
    this.canvas.setDirty(true, true);
  }

  centerOn(id) {
    const node = this.graph.getNodeById(id);
    if (!node) return;
    this.canvas.centerOnNode(node);
    this.canvas.selectNode(node, false);
    this.canvas.setDirty(true, true);
  }

  // --- run state -----------------------------------------------------------------------------------------------

  setRunning(id) {
    if (this.running) {
      // a finished node's live preview is stale: its result (an output node's images) replaces it, or nothing
      this.running.ngProgress = null;
      this.running.ngPreview = null;
    }
    this.running = id == null ? null : this.graph.getNodeById(id) ?? null;
    this.canvas.setDirty(true, false);
  }

  setProgress(id, value, max) {
    const node = this.graph.getNodeById(id);
    if (node) node.ngProgress = max > 0 ? Math.min(1, value / max) : null;
    this.canvas.setDirty(true, false);
  }

  /** Show images (URLs) on a node, growing it to make room. */
  setImages(id, urls) {
    const node = this.graph.getNodeById(id);
    if (!node) return;
    node.ngImages = urls.map((url) => {
      const img = new Image();
      img.onload = () => this.canvas.setDirty(true, false);
      img.src = url;
      return img;
    });
    node.ngPreview = null;
    this.#makeRoomForImage(node);
  }

  /** Show the picked input file on an image-loading node (through hooks.inputImageUrl). */
  showInputImage(id, name) {
    const widget = this.graph.getNodeById(id)?.ngInputImageWidget;
    if (!name || !widget?.options.values.includes(name)) return; // only files the server listed: no 404s
    const url = this.hooks.inputImageUrl?.(name);
    if (url) this.setImages(id, [url]);
  }

  setPreview(id, url) {
    const node = this.graph.getNodeById(id);
    if (!node) return;
    const img = new Image();
    img.onload = () => {
      if (this.running !== node) {  // decoded after its node finished: a stale preview, not shown
        URL.revokeObjectURL(url);
        return;
      }
      if (node.ngPreview?.src && node.ngPreview.src !== url) URL.revokeObjectURL(node.ngPreview.src);
      node.ngPreview = img;
      this.#makeRoomForImage(node);
      this.canvas.setDirty(true, false);
    };
    img.src = url;
  }

  setText(id, text) {
    const node = this.graph.getNodeById(id);
    if (!node) return;
    node.ngText = text;
    const needed = this.#contentTop(node) + 16 + 16 * Math.min(12, String(text).split("\n").length);
    if (node.size[1] < needed) node.setSize([node.size[0], needed]);
    this.canvas.setDirty(true, true);
  }

  clearRunState() {
    for (const node of this.graph._nodes) {
      node.ngProgress = null;
      node.ngPreview = null;
    }
    this.running = null;
    this.canvas.setDirty(true, false);
  }

  /**
   * Mark nodes with errors: {nodeId: {messages: [text], inputs: [names]}}; null clears every mark.
   */
  setErrors(errors) {
    for (const node of this.graph._nodes) {
      node.ngErrors = null;
      node.ngInvalidWidgets = null;
    }
    for (const [id, error] of Object.entries(errors ?? {})) {
      const node = this.graph.getNodeById(Number.isNaN(Number(id)) ? id : Number(id));
      if (!node) continue;
      node.ngErrors = error;
      node.ngInvalidWidgets = new Set(error.inputs ?? []);
    }
    this.canvas.setDirty(true, true);
  }

  // --- drawing -------------------------------------------------------------------------------------------------

  #contentTop(node) {
    let top = 4;
    for (const widget of node.widgets ?? []) {
      top = Math.max(top, widget.y + (widget.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT + 4));
    }
    const slots = Math.max(
      (node.inputs ?? []).filter((i) => !i.widget).length, (node.outputs ?? []).length);
    return Math.max(top, slots * LiteGraph.NODE_SLOT_HEIGHT + 8);
  }

  #makeRoomForImage(node) {
    const needed = this.#contentTop(node) + IMAGE_AREA_MIN;
    if (node.size[1] < needed) node.setSize([Math.max(node.size[0], 260), needed]);
    this.canvas.setDirty(true, true);
  }

  /** Running outline, progress bar, images, text output and error marks of one node. */
  drawNodeExtras(node, ctx) {
    const [width, height] = node.size;
    const titleHeight = LiteGraph.NODE_TITLE_HEIGHT;
    const top = this.#contentTop(node);
    const picture = node.ngPreview ?? node.ngImages?.[0];
    if (picture?.complete && picture.naturalWidth) {
      const areaW = width - 16;
      const areaH = height - top - 8;
      if (areaH > 20) {
        const scale = Math.min(areaW / picture.naturalWidth, areaH / picture.naturalHeight);
        const w = picture.naturalWidth * scale;
        const h = picture.naturalHeight * scale;
        ctx.drawImage(picture, (width - w) / 2, top + (areaH - h) / 2 + 4, w, h);
        if (!node.ngPreview && node.ngImages.length > 1) {
          ctx.fillStyle = "rgba(0,0,0,0.6)";
          ctx.fillRect(8, height - 26, 56, 20);
          ctx.fillStyle = "#fff";
          ctx.font = `12px ${THEME.font}`;
          ctx.fillText(`1 / ${node.ngImages.length}`, 14, height - 12);
        }
      }
    }
    if (node.ngText != null && !picture) {
      ctx.save();
      ctx.fillStyle = THEME.widgetBg;
      ctx.beginPath();
      ctx.roundRect(10, top, width - 20, height - top - 8, 6);
      ctx.fill();
      ctx.clip();
      ctx.fillStyle = THEME.widgetText;
      ctx.font = `13px ui-monospace, Menlo, Consolas, monospace`;
      wrapText(ctx, String(node.ngText), width - 36).slice(0, 40)
        .forEach((line, i) => ctx.fillText(line, 18, top + 18 + i * 16));
      ctx.restore();
    }
    if (this.running === node) {
      ctx.save();
      ctx.strokeStyle = THEME.running;
      ctx.lineWidth = 3;
      ctx.beginPath();
      ctx.roundRect(-3, -titleHeight - 3, width + 6, height + titleHeight + 6, 10);
      ctx.stroke();
      ctx.restore();
    }
    if (node.ngProgress != null) {
      // Along the foot of the title bar, on a visible track, so that step 1 of 3000 already shows a bar.
      const barHeight = 6;
      ctx.fillStyle = "rgba(255,255,255,0.14)";
      ctx.fillRect(0, -barHeight, width, barHeight);
      ctx.fillStyle = THEME.running;
      ctx.fillRect(0, -barHeight, Math.max(barHeight, width * node.ngProgress), barHeight);
    }
    if (node.ngErrors) this.#drawErrors(node, ctx);
  }

  #drawErrors(node, ctx) {
    const [width, height] = node.size;
    const titleHeight = LiteGraph.NODE_TITLE_HEIGHT;
    ctx.save();
    ctx.strokeStyle = THEME.error;
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.roundRect(-3, -titleHeight - 3, width + 6, height + titleHeight + 6, 10);
    ctx.stroke();
    ctx.lineWidth = 2;
    for (const name of node.ngInvalidWidgets ?? []) {
      const widget = node.widgets?.find((w) => w.name === name);
      if (widget) {
        ctx.beginPath();
        ctx.roundRect(BaseWidget.margin - 2, widget.y - 2, width - BaseWidget.margin * 2 + 4,
          (widget.computedHeight ?? 26) - 0, 8);
        ctx.stroke();
        continue;
      }
      const index = node.inputs?.findIndex((i) => i.name === name) ?? -1;
      if (index >= 0) {
        const [x, y] = node.getConnectionPos(true, index);
        ctx.fillStyle = THEME.error;
        ctx.beginPath();
        ctx.arc(x - node.pos[0], y - node.pos[1], 7, 0, Math.PI * 2);
        ctx.stroke();
      }
    }
    ctx.restore();
  }

  /** The error messages of every marked node, in a box under it, drawn after all nodes (canvas foreground). */
  #drawErrorNotes(ctx) {
    for (const node of this.graph._nodes) {
      const messages = node.ngErrors?.messages ?? [];
      if (!messages.length || node.flags?.collapsed) continue;
      const [width, height] = node.size;
      ctx.save();
      ctx.translate(node.pos[0], node.pos[1]);
      ctx.font = `12px ${THEME.font}`;
      const noteWidth = Math.max(width, 260);
      const lines = messages.flatMap((m) => wrapText(ctx, m, noteWidth - 16)).slice(0, 8);
      const boxH = lines.length * 16 + 10;
      ctx.fillStyle = "rgb(90, 20, 24)";
      ctx.strokeStyle = THEME.error;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.roundRect(0, height + 8, noteWidth, boxH, 6);
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = "#ffd9d9";
      lines.forEach((line, i) => ctx.fillText(line, 8, height + 24 + i * 16));
      ctx.restore();
    }
  }

  #drawGrid(ctx, area) {
    const [x, y, w, h] = area;
    const step = 20;
    ctx.save();
    ctx.fillStyle = "rgba(255,255,255,0.045)";
    const startX = Math.floor(x / step) * step;
    const startY = Math.floor(y / step) * step;
    const size = 1.2 / this.canvas.ds.scale;
    if (this.canvas.ds.scale > 0.45) {
      for (let gx = startX; gx < x + w; gx += step) {
        for (let gy = startY; gy < y + h; gy += step) ctx.fillRect(gx, gy, size, size);
      }
    }
    ctx.restore();
  }

  // --- text editing --------------------------------------------------------------------------------------------

  /** Edit a multiline widget in a textarea laid over it; the value follows every keystroke. */
  editText(node, widget) {
    this.closeTextEditor();
    const area = document.createElement("textarea");
    area.className = "ng-text-editor";
    area.value = widget.value ?? "";
    const [left, top] = this.toScreen([node.pos[0] + BaseWidget.margin, node.pos[1] + widget.y]);
    const scale = this.canvas.ds.scale;
    Object.assign(area.style, {
      left: `${left}px`, top: `${top}px`,
      width: `${(node.size[0] - BaseWidget.margin * 2) * scale}px`,
      height: `${Math.max(96, (widget.computedHeight ?? 64) - 4) * scale}px`,
      fontSize: `${Math.max(11, 12 * scale)}px`,
    });
    area.addEventListener("input", () => {
      widget.value = area.value;
      this.canvas.setDirty(true, false);
      this.hooks.onChange?.();
    });
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.closeTextEditor();
      event.stopPropagation();
    });
    area.addEventListener("blur", () => this.closeTextEditor());
    document.body.append(area);
    area.focus();
    this.textEditor = area;
  }

  closeTextEditor() {
    const area = this.textEditor;
    this.textEditor = null;
    area?.remove();
  }

  // --- internals -----------------------------------------------------------------------------------------------

  #openSearch(event, context) {
    let filter = null;
    if (context?.nodeFrom && context.slotFrom) filter = { type: context.slotFrom.type, direction: "input" };
    if (context?.nodeTo && context.slotTo) filter = { type: context.slotTo.type, direction: "output" };
    const clientX = event?.clientX ?? 200;
    const clientY = event?.clientY ?? 200;
    const request = { clientX, clientY, position: this.toGraph(clientX, clientY), filter, link: filter ? context : null };
    // After litegraph has finished with this pointer event (it focuses the canvas), so the box keeps the focus.
    setTimeout(() => this.hooks.onSearch?.(request), 0);
  }

  #watchSize() {
    const resize = () => {
      const rect = this.element.parentElement.getBoundingClientRect();
      const ratio = window.devicePixelRatio || 1;
      this.element.style.width = `${rect.width}px`;
      this.element.style.height = `${rect.height}px`;
      this.element.width = Math.round(rect.width * ratio);
      this.element.height = Math.round(rect.height * ratio);
      this.canvas.bgcanvas.width = this.element.width;
      this.canvas.bgcanvas.height = this.element.height;
      this.element.getContext("2d").scale(ratio, ratio);
      this.canvas.setDirty(true, true);
    };
    new ResizeObserver(resize).observe(this.element.parentElement);
    resize();
  }
}
