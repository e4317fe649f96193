// The node search box (double-click on the canvas, or drop a link on empty space): type to filter the node
// library by name, type, category or description; arrows + Enter or a click add the node.

import { typesCompatible } from "./node_defs.js";
import { h } from "./ui.js";

/**
 * Rank definitions for a query: name prefix > word prefix > substring > category/description match. The names
 * are the title, the type and the type's aliases (`search_aliases`); alias records themselves are not listed,
 * so each node shows once.
 */
export function searchNodes(defs, query, filter = null, limit = 60) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const whole = query.trim().toLowerCase();
  const results = [];
  for (const def of defs.values()) {
    if (def.aliasOf && defs.has(def.aliasOf)) continue;
    if (filter) {
      const slots = filter.direction === "input" ? def.inputs : def.outputs;
      if (!slots.some((slot) => typesCompatible(slot.type, filter.type))) continue;
    }
    const title = def.title.toLowerCase();
    const names = [def.type, ...(def.searchAliases ?? [])].map((name) => name.toLowerCase());
    const haystack = `${title} ${names.join(" ")} ${def.category.toLowerCase()} ${def.description.toLowerCase()}`;
    let score = title === whole || names.includes(whole) ? 20 : 0;
    let matched = true;
    for (const word of words) {
      if (title.startsWith(word) || names.some((name) => name.startsWith(word))) score += 8;
      else if (title.includes(word) || names.some((name) => name.includes(word))) score += 4;
      else if (haystack.includes(word)) score += 1;
      else matched = false;
    }
    if (!matched) continue;
    if (def.deprecated) score -= 3;
    results.push({ def, score });
  }
  results.sort((a, b) => b.score - a.score || a.def.title.length - b.def.title.length
    || a.def.title.localeCompare(b.def.title));
  // An empty query is the whole library (a scrolling list); a typed one shows its best `limit` matches.
  return (whole ? results.slice(0, limit) : results).map((r) => r.def);
}

export class NodeSearch {
  /** `onPick(def, request)` adds the node; `request` is what the editor passed to open(). */
  constructor(onPick) {
    this.onPick = onPick;
    this.defs = new Map();
    this.element = null;
  }

  setDefs(defs) {
    this.defs = defs;
  }

  get isOpen() {
    return this.element !== null;
  }

  open(request) {
    this.close();
    const input = h("input.search-input", { placeholder: "Search nodes…", spellcheck: false, autocomplete: "off" });
    const list = h("ul.search-results", { role: "listbox" });
    const filterNote = request.filter
      ? h("div.search-filter", {}, `${request.filter.direction === "input" ? "Takes" : "Gives"} `,
        h("span.type-pill", {}, request.filter.type))
      : null;
    const about = h("div.search-about");
    const box = h("div.search-box", { role: "dialog", "aria-label": "Add node" }, input, filterNote, list, about);
    let results = [];
    let active = 0;
    const render = () => {
      results = searchNodes(this.defs, input.value, request.filter);
      active = Math.min(active, Math.max(0, results.length - 1));
      list.replaceChildren(...results.map((def, i) => h(i === active ? "li.search-item.active" : "li.search-item", {
        role: "option", "aria-selected": i === active ? "true" : "false",
        dataset: { type: def.type },
        onpointerdown: (event) => { event.preventDefault(); this.#pick(def, request); },
        onpointermove: () => { if (active !== i) { active = i; render(); } },
      }, h("span.search-title", {}, def.title), h("span.search-category", {}, def.category))));
      if (!results.length) list.append(h("li.search-empty", {}, "No matching node"));
      about.textContent = results[active]?.description ?? "";
      about.hidden = !about.textContent;
      list.querySelector(".active")?.scrollIntoView({ block: "nearest" });
    };
    input.addEventListener("input", () => { active = 0; render(); });
    input.addEventListener("keydown", (event) => {
      event.stopPropagation();
      if (event.key === "ArrowDown") active = Math.min(active + 1, results.length - 1);
      else if (event.key === "ArrowUp") active = Math.max(active - 1, 0);
      else if (event.key === "Enter" && results[active]) return this.#pick(results[active], request);
      else if (event.key === "Escape") return this.close();
      else return undefined;
      event.preventDefault();
      render();
      return undefined;
    });
    input.addEventListener("blur", () => setTimeout(() => { if (this.element === box) this.close(); }, 120));
    const left = Math.min(request.clientX, window.innerWidth - 380);
    const top = Math.min(request.clientY, window.innerHeight - 380);
    box.style.left = `${Math.max(8, left)}px`;
    box.style.top = `${Math.max(52, top)}px`;
    document.body.append(box);
    this.element = box;
    render();
    input.focus();
  }

  #pick(def, request) {
    this.close();
    this.onPick(def, request);
  }

  close() {
    this.element?.remove();
    this.element = null;
  }
}
