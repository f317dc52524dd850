// Message search (GET /api/search, docs/protocol.md §10 "Search"): the search box, the results
// panel and its pages. What a result opens is the app's business (`onOpen`).

import * as api from "./api.js";
import { el } from "./view.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;

let onOpen = () => {};
let current = null; // {query, next, results: [...], loading}

/** Wire the search form and panel; `open(result)` shows a result's message. */
export function bindSearch({ open }) {
  onOpen = open;
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("search-input").value.trim();
    if (query) search(query);
  });
  $("search-close").addEventListener("click", closeSearch);
  $("search-more").addEventListener("click", () => {
    if (current?.next) loadPage(current);
  });
  $("search-results").addEventListener("click", (event) => {
    const item = event.target.closest("button[data-index]");
    const result = item && current?.results[Number(item.dataset.index)];
    if (result) onOpen(result);
  });
}

export function closeSearch() {
  current = null;
  $("search-panel").hidden = true;
  $("search-results").replaceChildren();
}

async function search(query) {
  current = { query, next: null, results: [], loading: false };
  $("search-panel").hidden = false;
  $("search-title").textContent = `Results for “${query}”`;
  $("search-results").replaceChildren();
  await loadPage(current);
}

async function loadPage(search) {
  if (search.loading) return;
  search.loading = true;
  render(search, "Searching…");
  let status = "";
  try {
    const page = await api.searchMessages(search.query, { before: search.next, limit: PAGE });
    if (current !== search) return;
    search.results.push(...page.results);
    search.next = page.next;
    if (search.results.length === 0) status = "No messages match.";
  } catch (error) {
    status = error.message; // the server names what is wrong with the query
  } finally {
    search.loading = false;
  }
  if (current === search) render(search, status);
}

function render(search, status) {
  $("search-status").textContent = status;
  $("search-results").replaceChildren(...search.results.map(resultItem));
  const more = $("search-more");
  more.hidden = !search.next;
  more.disabled = search.loading;
  $("search-panel").setAttribute("aria-busy", String(search.loading));
}

const when = new Intl.DateTimeFormat([], { dateStyle: "medium", timeStyle: "short" });

function resultItem(result, index) {
  const date = new Date(result.ts);
  return el("li", {}, [el("button", {
    className: "search-result", attrs: { type: "button" }, dataset: { index: String(index) },
  }, [
    el("span", { className: "msg-meta" }, [
      el("span", { className: "msg-user", text: result.user }),
      ` in #${result.room}${result.thread != null ? " (thread)" : ""} · `,
      Number.isNaN(date.getTime()) ? "" : when.format(date),
    ]),
    snippetElement(result.snippet),
  ])]);
}

// The server escapes a snippet's text with Python's html.escape(quote=False): &, < and > only.
const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">" };

/**
 * The snippet is the server's escaped text with the matches in <mark>. It is split on the
 * marks and unescaped into text nodes (a "<mark>" typed in a message arrives escaped, so
 * cannot split it): no HTML is parsed, and messages' sanitised html stays the page's only
 * HTML insertion.
 */
function snippetElement(snippet) {
  const node = el("span", { className: "search-snippet" });
  String(snippet ?? "").split(/<mark>|<\/mark>/).forEach((part, index) => {
    const text = part.replace(/&(?:amp|lt|gt);/g, (entity) => ENTITIES[entity]);
    node.append(index % 2 === 1 ? el("mark", { text }) : text);
  });
  return node;
}
