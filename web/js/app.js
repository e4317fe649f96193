// The editor application: boots against the server, wires the canvas, menus, queue, panels and the websocket.
// Graph work goes through the adapter (graph_adapter.js); the prompt is built by prompt.js.

import { Api, ApiError } from "./api.js";
import { Editor } from "./graph_adapter.js";
import { describeAll } from "./node_defs.js";
import { QueuePanel, ResultsGallery } from "./panels.js";
import { workflowFromPng } from "./png_meta.js";
import { graphToPrompt } from "./prompt.js";
import { NodeSearch } from "./search.js";
import { askText, closeMenu, showImage, showMenu, toast } from "./ui.js";
import { apiToWorkflow, classify, exampleEntries } from "./workflow_io.js";

const STORE_WORKFLOW = "nodegraph.workflow";
const STORE_IMAGES = "nodegraph.images";
const STORE_NAME = "nodegraph.workflowName";
const DEFAULT_EXAMPLE = "txt2img";

// The first-open graph when the server has no workflows/txt2img(.ui).json: ComfyUI's default txt2img.
function builtinDefault(defs) {
  const checkpoint = defs.get("CheckpointLoaderSimple")?.inputs.find((i) => i.name === "ckpt_name")?.widget;
  const choices = checkpoint?.options.values ?? [];
  const ckpt = choices.includes(checkpoint.value) ? checkpoint.value : choices[0] ?? "nodegraph-demo-sd1.safetensors";
  return {
    4: { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: ckpt } },
    6: { class_type: "CLIPTextEncode", inputs: { text: "a watercolor painting of a lighthouse on a cliff at sunset", clip: ["4", 1] } },
    7: { class_type: "CLIPTextEncode", inputs: { text: "blurry, low quality", clip: ["4", 1] } },
    5: { class_type: "EmptyLatentImage", inputs: { width: 512, height: 512, batch_size: 1 } },
    3: { class_type: "KSampler", inputs: { seed: 0, steps: 20, cfg: 7.0, sampler_name: "euler", scheduler: "normal",
      denoise: 1.0, model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0] } },
    8: { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["4", 2] } },
    9: { class_type: "SaveImage", inputs: { filename_prefix: "nodegraph", images: ["8", 0] } },
  };
}

class App {
  constructor() {
    this.api = new Api();
    this.defs = new Map();
    this.workflowName = localStorage.getItem(STORE_NAME) || "Untitled";
    this.lastSaved = null;
    this.currentPrompt = null;
    this.startedAt = null;
    this.search = new NodeSearch((def, request) => this.addFromSearch(def, request));
    this.editor = new Editor(document.getElementById("graph-canvas"), {
      onSearch: (request) => this.search.open(request),
      onUpload: (nodeId, widgetName) => this.upload(nodeId, widgetName),
      onOpenImage: (url) => showImage(url),
      onChange: () => this.persistSoon(),
      inputImageUrl: (name) => {
        const slash = name.lastIndexOf("/");
        return this.api.viewUrl({ filename: name.slice(slash + 1), subfolder: name.slice(0, Math.max(0, slash)),
          type: "input" });
      },
    });
    this.queuePanel = new QueuePanel(document.getElementById("tab-queue"), this.api, {
      onOpenWorkflow: (workflow, prompt) => this.openJob(workflow, prompt),
      onShowImage: (url, name) => showImage(url, name),
    });
    this.gallery = new ResultsGallery(document.getElementById("tab-results"), this.api);
  }

  async boot() {
    this.#wireChrome();
    this.#wireSocket();
    await this.loadNodeDefs();
    await this.openInitialWorkflow();
    this.api.connect();
    this.queuePanel.refresh();
    setInterval(() => this.persist(), 1000);
    document.body.dataset.ready = "true";
  }

  // --- node library ------------------------------------------------------------------------------------------

  async loadNodeDefs() {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const info = await this.api.objectInfo();
        this.defs = describeAll(info);
        this.editor.setNodeDefs(this.defs);
        this.search.setDefs(this.defs);
        return;
      } catch (error) {
        if (attempt === 0) this.setStatus("Waiting for the server…");
        await new Promise((resolve) => setTimeout(resolve, Math.min(4000, 500 * 2 ** attempt)));
      }
    }
  }

  addFromSearch(def, request) {
    const id = this.editor.addNode(def.type, request.position, request.link);
    this.persistSoon();
    return id;
  }

  // --- workflows ---------------------------------------------------------------------------------------------

  async openInitialWorkflow() {
    const saved = localStorage.getItem(STORE_WORKFLOW);
    if (saved) {
      try {
        const images = localStorage.getItem(STORE_IMAGES); // read first: loading persists the graph anew
        this.loadDocument(JSON.parse(saved), this.workflowName, { quiet: true });
        this.#restoreImages(images);
        return;
      } catch {
        localStorage.removeItem(STORE_WORKFLOW);
      }
    }
    await this.openDefault();
  }

  #restoreImages(stored) {
    try {
      const shown = JSON.parse(stored ?? "{}");
      for (const [id, urls] of Object.entries(shown)) {
        if (Array.isArray(urls) && urls.length) this.editor.setImages(Number(id), urls);
      }
      this.persist();
    } catch {
      localStorage.removeItem(STORE_IMAGES);
    }
  }

  async openDefault() {
    try {
      const example = exampleEntries((await this.api.exampleWorkflows()).workflows)
        .find((entry) => entry.base === DEFAULT_EXAMPLE);
      if (example && await this.openExample(example.name)) return;
    } catch {
      // no examples route or folder: use the built-in graph
    }
    const prompt = builtinDefault(this.defs);
    if (Object.values(prompt).some((node) => !this.defs.has(node.class_type))) {
      this.newWorkflow(); // the SD nodes are not installed here: an empty canvas beats a graph of red boxes
      return;
    }
    this.loadApiPrompt(prompt, "txt2img");
    this.editor.setWidgetValue(3, "control_after_generate", "randomize");
  }

  newWorkflow() {
    this.editor.clear();
    this.setName("Untitled");
    this.persist();
  }

  /** Load a parsed JSON document of any supported kind; returns true when something was loaded. */
  loadDocument(doc, name, { quiet = false } = {}) {
    const found = classify(doc);
    if (found.kind === "ui") {
      const { missing } = this.editor.loadWorkflow(found.workflow);
      this.setName(name);
      this.#reportMissing(missing);
      if (!quiet) toast(`Opened ${name}`, "success", { timeout: 2000 });
      this.persist();
      return true;
    }
    if (found.kind === "api") {
      this.loadApiPrompt(found.prompt, name);
      if (!quiet) toast(`Imported ${name} (API format, laid out automatically)`, "success", { timeout: 2500 });
      return true;
    }
    toast(`${name} is not a workflow`, "error",
      { detail: "Expected an editor workflow, an API prompt or a PNG made by nodegraph or ComfyUI." });
    return false;
  }

  loadApiPrompt(prompt, name) {
    const { workflow, missing } = apiToWorkflow(prompt, this.defs);
    this.editor.loadWorkflow(workflow);
    this.editor.autoLayout();
    this.setName(name);
    this.#reportMissing(missing);
    this.persist();
  }

  #reportMissing(missing) {
    this.editor.setErrors(null);
    if (missing.length) {
      toast("Some nodes are not installed on this server", "error",
        { detail: `${missing.join(", ")}. They are shown in red; the workflow cannot run until they are available.` });
    }
  }

  async openFile(file) {
    const base = file.name.replace(/\.(json|png)$/i, "");
    try {
      if (file.type === "image/png" || /\.png$/i.test(file.name)) {
        const found = await workflowFromPng(await file.arrayBuffer());
        if (!found) {
          toast(`${file.name} carries no workflow`, "error", { detail: "Only PNGs saved by nodegraph or ComfyUI hold one." });
          return;
        }
        this.loadDocument(found.workflow ?? found.prompt, base);
        return;
      }
      this.loadDocument(JSON.parse(await file.text()), base);
    } catch (error) {
      toast(`Could not open ${file.name}`, "error", { detail: error.message });
    }
  }

  /** Open a file of the server's workflows/ folder, fitted to the window; true when it loaded. */
  async openExample(name) {
    try {
      const doc = await this.api.exampleWorkflow(name);
      if (!this.loadDocument(doc, name.replace(/(\.ui)?\.json$/, ""), { quiet: true })) return false;
      this.editor.fitView();
      this.persist();
      return true;
    } catch (error) {
      toast(`Could not open example ${name}`, "error", { detail: error.message });
      return false;
    }
  }

  openJob(workflow, prompt) {
    if (workflow) this.loadDocument(workflow, "from history");
    else if (prompt) this.loadDocument(prompt, "from history");
    else toast("This job carries no workflow", "error");
  }

  async saveWorkflow() {
    const name = await askText("Save workflow as", this.workflowName);
    if (!name) return;
    this.setName(name);
    download(`${name.replace(/\.json$/i, "")}.json`, JSON.stringify(this.editor.serializeWorkflow(), null, 2));
    this.persist();
  }

  exportApi() {
    const { output } = graphToPrompt(this.editor.snapshot());
    download(`${this.workflowName}_api.json`, JSON.stringify(output, null, 2));
  }

  setName(name) {
    this.workflowName = name || "Untitled";
    document.getElementById("workflow-name").textContent = this.workflowName;
    document.title = `${this.workflowName} – nodegraph`;
  }

  persistSoon() {
    clearTimeout(this.persistTimer);
    this.persistTimer = setTimeout(() => this.persist(), 300);
  }

  /** Keep the graph in localStorage so a reload or a server restart never loses it. */
  persist() {
    document.getElementById("empty-hint").hidden = this.editor.nodeIds().length > 0;
    const text = JSON.stringify(this.editor.serializeWorkflow());
    const images = JSON.stringify(this.editor.resultImages());
    if (text === this.lastSaved && images === this.lastImages) return;
    this.lastSaved = text;
    this.lastImages = images;
    try {
      localStorage.setItem(STORE_WORKFLOW, text);
      localStorage.setItem(STORE_IMAGES, images); // results shown on nodes come back after a reload
      localStorage.setItem(STORE_NAME, this.workflowName);
    } catch {
      // storage full or disabled: the graph stays in the page
    }
  }

  async upload(nodeId, widgetName) {
    const input = document.getElementById("upload-input");
    input.value = "";
    input.onchange = async () => {
      const file = input.files[0];
      if (!file) return;
      try {
        const result = await this.api.uploadImage(file);
        const name = result.subfolder ? `${result.subfolder}/${result.name}` : result.name;
        await this.loadNodeDefs();
        if (widgetName) this.editor.setWidgetValue(nodeId, widgetName, name);
        toast(`Uploaded ${name}`, "success", { timeout: 2000 });
      } catch (error) {
        toast("Upload failed", "error", { detail: error.message });
      }
    };
    input.click();
  }

  // --- running -----------------------------------------------------------------------------------------------

  async queue() {
    const snapshot = this.editor.snapshot();
    const missing = snapshot.nodes.filter((n) => n.missing && n.mode !== 2 && n.mode !== 4);
    if (missing.length) {
      toast("This workflow uses nodes that are not installed", "error",
        { detail: [...new Set(missing.map((n) => n.type))].join(", ") });
      return null;
    }
    const { output, problems } = graphToPrompt(snapshot);
    for (const problem of problems) toast(`Node #${problem.nodeId}: ${problem.message}`, "error");
    const workflow = this.editor.serializeWorkflow();
    this.editor.setErrors(null);
    try {
      const answer = await this.api.queuePrompt(output, workflow);
      this.editor.applyControlsAfterQueue();
      this.persist();
      if (Object.keys(answer.node_errors ?? {}).length) {
        this.#showNodeErrors(answer.node_errors, output);
        toast("Some outputs were left out", "error",
          { detail: `${this.#errorLines(answer.node_errors, output)}\nThe rest runs; the nodes are marked in red.` });
      }
      this.queuePanel.refreshSoon(50);
      return answer.prompt_id;
    } catch (error) {
      if (error instanceof ApiError && error.status === 400 && error.body?.error) {
        this.#showPromptError(error.body, output);
      } else {
        toast("Could not queue the workflow", "error", { detail: error.message });
      }
      return null;
    }
  }

  #showPromptError(body, output) {
    const nodeErrors = body.node_errors ?? {};
    const count = this.#showNodeErrors(nodeErrors, output);
    const first = Object.keys(nodeErrors)[0];
    const detail = count
      ? this.#errorLines(nodeErrors, output)
      : body.error.details || body.error.message;
    toast(body.error.message || "Prompt failed validation", "error", {
      detail,
      action: first ? { label: "Show node", run: () => this.editor.centerOn(Number(first)) } : null,
    });
  }

  /** One line per problem, led by the node's id and title. */
  #errorLines(nodeErrors, output) {
    return Object.entries(nodeErrors).flatMap(([id, e]) => (e.errors ?? []).map((x) =>
      `#${id} ${this.#nodeTitle(id) || this.#title(id, output)}: ${this.#withTitles(errorText(x), id, output)}`))
      .join("\n");
  }

  #showNodeErrors(nodeErrors, output) {
    const marks = {};
    for (const [id, entry] of Object.entries(nodeErrors ?? {})) {
      const errors = entry.errors ?? [];
      marks[id] = {
        messages: errors.map((error) => this.#withTitles(errorText(error), id, output)),
        inputs: errors.map((x) => x.extra_info?.input_name).filter(Boolean),
      };
    }
    this.editor.setErrors(marks);
    return Object.keys(marks).length;
  }

  /** A server message in the words of the graph on screen: "node 4 (CheckpointLoaderSimple)" and "of CLIPEncode"
   * (the failing node's class) become the nodes' titles, as the user named them. */
  #withTitles(text, id, output) {
    let result = String(text);
    for (const [nid, spec] of Object.entries(output ?? {})) {
      const title = this.#nodeTitle(nid) || this.#title(nid, output);
      if (spec?.class_type) result = result.replaceAll(`node ${nid} (${spec.class_type})`, `"${title}"`);
    }
    const own = output?.[id]?.class_type;
    const title = this.#nodeTitle(id) || this.#title(id, output);
    if (own && title && title !== own) result = result.replaceAll(` of ${own} `, ` of "${title}" `);
    return result;
  }

  #title(id, output) {
    return output?.[id]?._meta?.title ?? output?.[id]?.class_type ?? "";
  }

  #wireSocket() {
    const api = this.api;
    const connection = document.getElementById("connection");
    const setConnection = (state, label) => {
      connection.dataset.state = state;
      connection.querySelector(".label").textContent = label;
    };
    api.addEventListener("connected", () => setConnection("online", "connected"));
    api.addEventListener("disconnected", () => {
      setConnection("offline", "reconnecting…");
      this.editor.clearRunState();
      document.getElementById("interrupt-button").disabled = true;
    });
    api.addEventListener("reconnected", async () => {
      setConnection("online", "connected");
      toast("Reconnected to the server", "success", { timeout: 2500 });
      await this.loadNodeDefs();
      this.queuePanel.refreshSoon();
    });
    api.addEventListener("status", ({ detail }) => {
      const remaining = detail?.status?.exec_info?.queue_remaining ?? 0;
      const badge = document.getElementById("queue-count");
      badge.textContent = String(remaining);
      badge.hidden = remaining === 0;
      document.getElementById("interrupt-button").disabled = remaining === 0;
      this.queuePanel.refreshSoon();
    });
    api.addEventListener("execution_start", ({ detail }) => {
      this.currentPrompt = detail.prompt_id;
      this.startedAt = performance.now();
      this.editor.clearRunState();
      this.setStatus("Running…");
    });
    api.addEventListener("executing", ({ detail }) => {
      const id = detail.display_node ?? detail.node;
      this.editor.setRunning(id == null ? null : id);
      if (id != null) this.setStatus(`Running ${this.#nodeTitle(id)}`);
      else this.queuePanel.refreshSoon(); // the end: the job has left the queue
    });
    api.addEventListener("progress", ({ detail }) => {
      this.editor.setProgress(detail.node, detail.value, detail.max);
      this.setStatus(`${this.#nodeTitle(detail.node)}: ${detail.value} / ${detail.max}`);
    });
    api.addEventListener("preview", ({ detail }) => {
      const running = this.editor.running?.id;
      const id = detail.nodeId ?? running;
      // A frame decoded after its node finished (binary frames are read asynchronously) would leave a stale
      // preview behind: only the node that runs now shows one.
      if (id != null && running != null && String(id) === String(running)) {
        this.editor.setPreview(id, URL.createObjectURL(detail.blob));
      }
    });
    api.addEventListener("executed", ({ detail }) => {
      const id = detail.display_node ?? detail.node;
      const output = detail.output ?? {};
      if (Array.isArray(output.images) && output.images.length) {
        this.editor.setImages(id, output.images.map((image) => api.viewUrl(image)));
        this.gallery.add(output.images);
      }
      if (Array.isArray(output.text)) this.editor.setText(id, output.text.join("\n"));
    });
    api.addEventListener("execution_success", () => {
      this.editor.clearRunState(); // no stale live preview left on the sampler
      const seconds = this.startedAt ? (performance.now() - this.startedAt) / 1000 : null;
      this.flash(seconds != null ? `Finished in ${seconds.toFixed(1)} s` : "Finished");
      this.queuePanel.refreshSoon();
    });
    api.addEventListener("execution_error", ({ detail }) => {
      this.editor.setRunning(null);
      const id = detail.node_id;
      const message = `${detail.exception_type ?? "Error"}: ${detail.exception_message ?? ""}`.trim();
      if (id != null) this.editor.setErrors({ [id]: { messages: [message], inputs: [] } });
      toast(`${this.#nodeTitle(id) || detail.node_type || "A node"} failed`, "error", {
        detail: detail.exception_message,
        action: id != null ? { label: "Show node", run: () => this.editor.centerOn(Number(id)) } : null,
      });
      this.setStatus("");
      this.queuePanel.refreshSoon();
    });
    api.addEventListener("execution_interrupted", () => {
      this.editor.clearRunState();
      this.flash("Stopped");
      this.queuePanel.refreshSoon();
    });
  }

  #nodeTitle(id) {
    if (id == null) return "";
    const info = this.editor.nodeInfo(Number.isNaN(Number(id)) ? id : Number(id));
    return info ? info.title : `node ${id}`;
  }

  setStatus(text) {
    const line = document.getElementById("status-line");
    line.textContent = text;
    line.hidden = !text;
  }

  flash(text) {
    this.setStatus(text);
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => this.setStatus(""), 4000);
  }

  // --- chrome ------------------------------------------------------------------------------------------------

  #wireChrome() {
    this.setName(this.workflowName);
    const fileInput = document.getElementById("file-input");
    fileInput.addEventListener("change", () => {
      if (fileInput.files[0]) this.openFile(fileInput.files[0]);
      fileInput.value = "";
    });
    const menus = {
      workflow: () => [
        { label: "New", hint: "", run: () => this.newWorkflow() },
        { label: "Open…", hint: "Ctrl+O", run: () => fileInput.click() },
        { label: "Save…", hint: "Ctrl+S", run: () => this.saveWorkflow() },
        "-",
        { label: "Import API JSON or PNG…", run: () => fileInput.click() },
        { label: "Export API JSON", run: () => this.exportApi() },
        "-",
        { label: "Fit to view", hint: ".", run: () => this.editor.fitView() },
        { label: "Tidy layout", run: () => this.editor.autoLayout() },
      ],
      examples: async () => {
        try {
          const list = await this.api.exampleWorkflows();
          const items = exampleEntries(list.workflows).map((entry) => ({ label: entry.title, hint: entry.name,
            run: () => this.openExample(entry.name) }));
          return items.length ? [{ heading: "Example workflows" }, ...items]
            : [{ heading: "No example workflows on this server" }];
        } catch (error) {
          return [{ heading: `Examples unavailable: ${error.message}` }];
        }
      },
    };
    for (const button of document.querySelectorAll(".menu-button")) {
      button.addEventListener("click", async () => showMenu(button, await menus[button.dataset.menu]()));
    }
    document.getElementById("queue-button").addEventListener("click", () => this.queue());
    document.getElementById("interrupt-button").addEventListener("click", () => this.api.interrupt().catch(() => {}));
    const panel = document.getElementById("side-panel");
    document.getElementById("panel-toggle").addEventListener("click", () => {
      panel.classList.toggle("collapsed");
      requestAnimationFrame(() => this.editor.canvas.setDirty(true, true));
    });
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => this.showTab(tab.dataset.tab));
    }
    document.addEventListener("keydown", (event) => {
      const mod = event.ctrlKey || event.metaKey;
      const typing = event.target instanceof HTMLElement && event.target.matches("input, textarea, select");
      if (mod && event.key === "Enter") {
        event.preventDefault();
        this.queue();
      } else if (mod && event.key.toLowerCase() === "s") {
        event.preventDefault();
        this.saveWorkflow();
      } else if (mod && event.key.toLowerCase() === "o") {
        event.preventDefault();
        fileInput.click();
      } else if (event.key === "Escape") {
        closeMenu();
        this.search.close();
      } else if (event.key === "." && !typing && !mod) {
        this.editor.fitView();
      }
    });
    this.#wireDrop();
  }

  showTab(name) {
    for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
    document.getElementById("tab-queue").hidden = name !== "queue";
    document.getElementById("tab-results").hidden = name !== "results";
    if (name === "queue") this.queuePanel.refresh();
  }

  #wireDrop() {
    const hint = document.getElementById("drop-hint");
    let depth = 0;
    window.addEventListener("dragenter", (event) => {
      if (!event.dataTransfer?.types.includes("Files")) return;
      depth += 1;
      hint.classList.add("visible");
    });
    window.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) hint.classList.remove("visible");
    });
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      hint.classList.remove("visible");
      const file = event.dataTransfer?.files?.[0];
      if (file) this.openFile(file);
    });
  }
}

/** One validation error as a line: the server's precise details ("width: 99999 is bigger than the maximum
 * 4096"), else its message, led by the input's name. */
function errorText(error) {
  const input = error.extra_info?.input_name;
  const text = String(error.details || error.message || "invalid");
  return input && !text.startsWith(input) ? `${input}: ${text}` : text;
}

function download(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

const app = new App();
window.nodegraph = app; // for the browser console, extensions and the tests
app.boot().catch((error) => {
  toast("The editor failed to start", "error", { detail: error.message });
  throw error;
});
