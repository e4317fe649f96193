// Small DOM building blocks shared by the editor's panels: element creation, toasts, dropdown menus, the image
// viewer. No framework: each helper returns plain elements.

/** Create an element: h("button.primary", {onclick, title}, "text", child...). */
export function h(tag, props = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const element = document.createElement(name || "div");
  if (classes.length) element.className = classes.join(" ");
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key in element && key !== "list") element[key] = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const ICONS = {
  close: "M4.5 4.5l7 7m0-7l-7 7",
  trash: "M3 4.5h10M6.5 4.5V3h3v1.5M4.5 4.5l.6 8.5h5.8l.6-8.5",
  open: "M6 3H3v10h10v-3M9 3h4v4M13 3L7.5 8.5",
  download: "M8 2.5v8m-3.5-3.5L8 10.5l3.5-3.5M3 13.5h10",
  check: "M3.5 8.5l3 3 6-7",
  alert: "M8 3.5v5.5m0 2.5v.5",
  clock: "M8 3a5 5 0 1 0 0 10A5 5 0 0 0 8 3zm0 2v3l2 1.5",
  play: "M5.5 3.5v9l7-4.5z",
  stop: "M4.5 4.5h7v7h-7z",
};

/** A 16px line icon (stroke follows the text colour). */
export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

/** A message in the corner. kind: "info" | "success" | "error". Errors stay until closed. */
export function toast(message, kind = "info", { detail = null, timeout = 4000, action = null } = {}) {
  const box = document.getElementById("toasts");
  const close = () => item.remove();
  const item = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" },
    h("div.toast-text", {}, h("div.toast-title", {}, message), detail ? h("div.toast-detail", {}, detail) : null),
    action ? h("button.link", { onclick: () => { action.run(); close(); } }, action.label) : null,
    h("button.toast-close", { onclick: close, title: "Close", "aria-label": "Close" }, "×"));
  box.append(item);
  if (kind !== "error" && timeout) setTimeout(close, timeout);
  return item;
}

let openMenu = null;

export function closeMenu() {
  openMenu?.remove();
  openMenu = null;
}

/** A dropdown under `anchor`; items: [{label, hint, run, disabled} | "-" (separator) | {heading}]. */
export function showMenu(anchor, items) {
  closeMenu();
  const rect = anchor.getBoundingClientRect();
  const menu = h("div.dropdown", { role: "menu" }, items.map((item) => {
    if (item === "-") return h("div.separator");
    if (item.heading) return h("div.menu-heading", {}, item.heading);
    return h("button.menu-item", {
      role: "menuitem", disabled: item.disabled,
      onclick: () => { closeMenu(); item.run(); },
    }, h("span", {}, item.label), item.hint ? h("span.hint", {}, item.hint) : null);
  }));
  menu.style.left = `${rect.left}px`;
  menu.style.top = `${rect.bottom + 4}px`;
  document.body.append(menu);
  openMenu = menu;
  setTimeout(() => document.addEventListener("pointerdown", function away(event) {
    if (!menu.contains(event.target)) {
      if (openMenu === menu) closeMenu();
      document.removeEventListener("pointerdown", away, true);
    }
  }, true));
}

/** Full-window image viewer with a download link; Escape or a click outside closes it. */
export function showImage(url, filename) {
  const close = () => {
    overlay.remove();
    document.removeEventListener("keydown", onKey, true);
  };
  const onKey = (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      close();
    }
  };
  const overlay = h("div.lightbox", { onclick: (event) => { if (event.target === overlay) close(); } },
    h("figure", {},
      h("img", { src: url, alt: filename ?? "result" }),
      h("figcaption", {},
        h("span", {}, filename ?? ""),
        h("a.button", { href: url, download: filename ?? "image.png" }, "Download"),
        h("button.button.ghost", { onclick: close }, "Close"))));
  document.addEventListener("keydown", onKey, true);
  document.body.append(overlay);
  return overlay;
}

/** Ask for a line of text in a small modal; resolves to the text or null. */
export function askText(title, value = "") {
  return new Promise((resolve) => {
    const input = h("input.text-input", { value, spellcheck: false });
    const finish = (result) => {
      overlay.remove();
      resolve(result);
    };
    const overlay = h("div.modal-backdrop", { onclick: (event) => { if (event.target === overlay) finish(null); } },
      h("form.modal", { onsubmit: (event) => { event.preventDefault(); finish(input.value.trim() || null); } },
        h("h2", {}, title), input,
        h("div.modal-actions", {},
          h("button.button.ghost", { type: "button", onclick: () => finish(null) }, "Cancel"),
          h("button.button.primary", { type: "submit" }, "OK"))));
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") finish(null);
      event.stopPropagation();
    });
    document.body.append(overlay);
    input.focus();
    input.select();
  });
}

export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}
