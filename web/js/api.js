// The server connection: JSON over HTTP and the websocket (ComfyUI protocol, COMPAT 2 and docs/api.md).
//
// The socket reconnects by itself after the server restarts, keeping the same client id so the server can
// deliver what it buffered meanwhile. Binary frames are decoded into preview events:
//   type 4: uint32 4 | uint32 meta_len | meta JSON | image bytes   (we advertise supports_preview_metadata)
//   type 1: uint32 1 | uint32 format (1 JPEG, 2 PNG) | image bytes (legacy servers)

const CLIENT_ID_KEY = "nodegraph.clientId";

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** The base path the editor is served under ("" at the root), so it also works behind a sub-path proxy. */
function basePath() {
  return location.pathname.replace(/\/[^/]*$/, "");
}

export class Api extends EventTarget {
  constructor() {
    super();
    this.base = basePath();
    this.clientId = sessionStorage.getItem(CLIENT_ID_KEY);
    this.socket = null;
    this.connected = false;
    this.everConnected = false;
    this.serverFlags = null; // the server's feature_flags reply
    this._retryDelay = 500;
  }

  url(path) {
    return `${this.base}/api${path}`;
  }

  async json(method, path, body) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(this.url(path), init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!response.ok) {
      const message = data?.error?.message ?? data?.error ?? `${method} ${path}: HTTP ${response.status}`;
      throw new ApiError(response.status, data, typeof message === "string" ? message : JSON.stringify(message));
    }
    return data;
  }

  objectInfo() {
    return this.json("GET", "/object_info");
  }

  /** POST /prompt; resolves to {prompt_id, number, node_errors} or throws ApiError (400 body in .body).
   * The editor shows live previews, so it asks for them when the server's default (--preview-method, told in its
   * feature flags) is none, as the official frontend's per-prompt preview setting does; otherwise it takes the
   * server's method (which may be taesd). */
  queuePrompt(prompt, workflow) {
    const extra = { extra_pnginfo: { workflow } };
    const serverMethod = this.serverFlags?.preview_method;
    if (!serverMethod || serverMethod === "none") extra.preview_method = "auto";
    return this.json("POST", "/prompt", { prompt, client_id: this.clientId, extra_data: extra });
  }

  interrupt(promptId) {
    return this.json("POST", "/interrupt", promptId ? { prompt_id: promptId } : {});
  }

  jobs(params) {
    return this.json("GET", `/jobs?${new URLSearchParams(params)}`);
  }

  job(id) {
    return this.json("GET", `/jobs/${encodeURIComponent(id)}`);
  }

  cancelJob(id) {
    return this.json("POST", `/jobs/${encodeURIComponent(id)}/cancel`, {});
  }

  deleteHistory(ids) {
    return this.json("POST", "/history", { delete: ids });
  }

  clearHistory() {
    return this.json("POST", "/history", { clear: true });
  }

  exampleWorkflows() {
    return this.json("GET", "/nodegraph/workflows");
  }

  exampleWorkflow(name) {
    return this.json("GET", `/nodegraph/workflows/${encodeURIComponent(name)}`);
  }

  async uploadImage(file) {
    const form = new FormData();
    form.append("image", file);
    form.append("type", "input");
    const response = await fetch(this.url("/upload/image"), { method: "POST", body: form });
    const data = await response.json();
    if (!response.ok) throw new ApiError(response.status, data, data.error ?? `upload failed (${response.status})`);
    return data;
  }

  /** URL of an output / input / temp image as the server describes it ({filename, subfolder, type}). */
  viewUrl(image, preview = false) {
    const query = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder ?? "",
      type: image.type ?? "output" });
    if (preview) query.set("preview", "webp;85");
    return `${this.url("/view")}?${query}`;
  }

  // --- websocket ----------------------------------------------------------------------------------------------

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = this.clientId ? `?clientId=${encodeURIComponent(this.clientId)}` : "";
    const socket = new WebSocket(`${scheme}://${location.host}${this.base}/ws${query}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
    });
    socket.addEventListener("message", (event) => this._onMessage(event));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      const was = this.connected;
      this.connected = false;
      if (was) this._emit("disconnected", {});
      setTimeout(() => this.connect(), this._retryDelay);
      this._retryDelay = Math.min(this._retryDelay * 2, 4000);
    });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _onMessage(event) {
    if (event.data instanceof ArrayBuffer) {
      this._onBinary(event.data);
      return;
    }
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    const { type, data } = message ?? {};
    if (type === "status") {
      if (data?.sid) {
        this.clientId = data.sid;
        sessionStorage.setItem(CLIENT_ID_KEY, data.sid);
      }
      if (!this.connected) {
        const reconnected = this.everConnected;
        this.connected = true;
        this.everConnected = true;
        this._retryDelay = 500;
        this._emit(reconnected ? "reconnected" : "connected", {});
      }
    }
    if (type === "feature_flags" && data && typeof data === "object") this.serverFlags = data;
    if (typeof type === "string") this._emit(type, data ?? {});
  }

  _onBinary(buffer) {
    if (buffer.byteLength < 8) return;
    const view = new DataView(buffer);
    const kind = view.getUint32(0);
    if (kind === 4) {
      const metaLength = view.getUint32(4);
      let meta = {};
      try {
        meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, metaLength)));
      } catch {
        return;
      }
      const blob = new Blob([new Uint8Array(buffer, 8 + metaLength)], { type: meta.image_type ?? "image/jpeg" });
      this._emit("preview", { blob, nodeId: meta.display_node_id ?? meta.node_id, promptId: meta.prompt_id });
    } else if (kind === 1) {
      const format = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
      this._emit("preview", { blob: new Blob([new Uint8Array(buffer, 8)], { type: format }), nodeId: null });
    }
  }
}
