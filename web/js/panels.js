// The side panel: the queue / history list (from GET /api/jobs) and the results gallery.

import { formatDuration, h, icon, showImage, toast } from "./ui.js";

const STATUS_LABELS = {
  pending: "Pending",
  in_progress: "Running",
  completed: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};

const STATUS_ICONS = {
  pending: "clock",
  in_progress: "play",
  completed: "check",
  failed: "alert",
  cancelled: "stop",
};

function ago(ms) {
  if (!ms) return "";
  const seconds = Math.max(0, (Date.now() - ms) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

export class QueuePanel {
  /** `onOpenWorkflow(workflow)` loads a finished job's graph into the editor. */
  constructor(element, api, { onOpenWorkflow, onShowImage }) {
    this.element = element;
    this.api = api;
    this.onOpenWorkflow = onOpenWorkflow;
    this.onShowImage = onShowImage;
    this.timer = null;
    this.list = h("ul.job-list");
    this.element.append(
      h("div.panel-header", {}, h("span", {}, "Jobs"),
        h("button.button.small.ghost", { onclick: () => this.clearHistory(), title: "Delete every finished job" },
          "Clear history")),
      this.list,
    );
  }

  /** Refresh soon (coalesces bursts of websocket events). */
  refreshSoon(delay = 250) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), delay);
  }

  async refresh() {
    let active;
    let done;
    try {
      [active, done] = await Promise.all([
        this.api.jobs({ status: "in_progress,pending", sort_order: "asc", limit: 100 }),
        this.api.jobs({ status: "completed,failed,cancelled", limit: 50 }),
      ]);
    } catch {
      return; // server away: the connection badge says so; keep the last list
    }
    const jobs = [...active.jobs.sort((a, b) => (a.status === "in_progress" ? -1 : 0) - (b.status === "in_progress" ? -1 : 0)),
      ...done.jobs];
    this.list.replaceChildren(...jobs.map((job) => this.#item(job)));
    if (!jobs.length) this.list.append(h("li.empty", {}, "Nothing queued yet. Press Queue (Ctrl+Enter) to run the workflow."));
  }

  #item(job) {
    const running = job.status === "in_progress";
    const finished = !running && job.status !== "pending";
    const duration = job.execution_start_time && job.execution_end_time
      ? formatDuration((job.execution_end_time - job.execution_start_time) / 1000) : "";
    const preview = job.preview_output?.filename ? job.preview_output : null;
    const thumb = preview
      ? h("img.job-thumb", { src: this.api.viewUrl(preview, true), alt: "", loading: "lazy",
        onclick: () => this.onShowImage(this.api.viewUrl(preview), preview.filename) })
      : h(`div.job-thumb.placeholder.${job.status}`, {}, icon(STATUS_ICONS[job.status] ?? "clock"));
    const failure = job.execution_error;
    let error = null;
    if (failure && job.status === "cancelled") {
      error = h("div.job-note", {}, failure.node_type ? `stopped at ${failure.node_type}` : "stopped");
    } else if (failure) {
      const text = `${failure.node_type ?? ""}: ${failure.exception_message ?? "failed"}`.replace(/^: /, "");
      error = h("div.job-error", { title: text }, text);
    }
    const actions = [];
    if (!finished) {
      actions.push(h("button.icon-button", { title: running ? "Stop" : "Cancel", "aria-label": "Cancel job",
        dataset: { action: "cancel" }, onclick: () => this.cancel(job.id) }, icon("close")));
    } else {
      actions.push(h("button.icon-button", { title: "Open this job's workflow", "aria-label": "Open workflow",
        dataset: { action: "open" }, onclick: () => this.openWorkflow(job.id) }, icon("open")));
      actions.push(h("button.icon-button", { title: "Delete from history", "aria-label": "Delete job",
        dataset: { action: "delete" }, onclick: () => this.remove(job.id) }, icon("trash")));
    }
    return h(`li.job.${job.status}`, { dataset: { id: job.id, status: job.status } },
      thumb,
      h("div.job-body", {},
        h("div.job-line", {}, h(`span.pill.${job.status}`, {}, STATUS_LABELS[job.status] ?? job.status),
          h("span.job-time", {}, duration || ago(job.create_time))),
        h("div.job-id", { title: job.id }, job.id.slice(0, 8)),
        error),
      h("div.job-actions", {}, actions));
  }

  async cancel(id) {
    try {
      await this.api.cancelJob(id);
    } catch (error) {
      toast("Could not cancel the job", "error", { detail: error.message });
    }
    this.refreshSoon(50);
  }

  async remove(id) {
    try {
      await this.api.deleteHistory([id]);
    } catch (error) {
      toast("Could not delete the job", "error", { detail: error.message });
    }
    this.refreshSoon(50);
  }

  async clearHistory() {
    try {
      await this.api.clearHistory();
    } catch (error) {
      toast("Could not clear the history", "error", { detail: error.message });
    }
    this.refreshSoon(50);
  }

  async openWorkflow(id) {
    try {
      const job = await this.api.job(id);
      const workflow = job.workflow?.extra_data?.extra_pnginfo?.workflow;
      this.onOpenWorkflow(workflow ?? null, job.workflow?.prompt ?? null);
    } catch (error) {
      toast("Could not open the job", "error", { detail: error.message });
    }
  }
}

export class ResultsGallery {
  constructor(element, api) {
    this.element = element;
    this.api = api;
    this.seen = new Set();
    this.grid = h("div.gallery");
    this.empty = h("div.empty", {}, "Images your workflows make appear here.");
    this.element.append(h("div.panel-header", {}, h("span", {}, "Results")), this.empty, this.grid);
  }

  /** Add images ({filename, subfolder, type}) at the front, newest first. */
  add(images) {
    for (const image of images) {
      const url = this.api.viewUrl(image);
      if (this.seen.has(url)) continue;
      this.seen.add(url);
      const tile = h("figure.tile", { dataset: { filename: image.filename }, title: image.filename },
        h("img", { src: this.api.viewUrl(image, true), alt: image.filename, loading: "lazy",
          onclick: () => showImage(url, image.filename) }),
        h("figcaption", {}, h("span", {}, image.filename),
          h("a.download", { href: url, download: image.filename, title: "Download", "aria-label": "Download" }, icon("download"))));
      this.grid.prepend(tile);
    }
    this.empty.hidden = this.seen.size > 0;
  }
}
