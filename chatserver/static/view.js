// Rendering: builds and updates DOM from state. Every string from the server or a user goes in
// as textContent (through `el`). The single exception is a message's `html` field, which the
// server rendered from Markdown and sanitised with an allow-list (see `messageBody`).

import { mentions } from "./state.js";

const $ = (id) => document.getElementById(id);
const NEAR_BOTTOM_PX = 80;
const NOTICE_MS = 8_000;
// Unread counts past this show as "999+" (the server counts at most 1,000).
const UNREAD_SHOWN_MAX = 999;
// The reaction picker's choices; any other emoji arrives from other clients and shows too.
export const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "👀", "✅"];

// Who is looking: their own messages (and every message, for an admin) can be changed, and
// messages mentioning them are highlighted.
let viewer = { name: "", admin: false };

const STATE_TEXT = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  stopped: "offline",
};

/** A new element; `text` and string children become text nodes, never markup. */
export function el(tag, { className, text, attrs, dataset } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value !== false && value != null) node.setAttribute(name, value === true ? "" : value);
  }
  Object.assign(node.dataset, dataset ?? {});
  for (const child of children) {
    if (child != null) node.append(child); // append() takes strings as text
  }
  return node;
}

// -- views and status ------------------------------------------------------------------------

export function showLogin(message = "") {
  $("chat-view").hidden = true;
  $("logout").hidden = true;
  $("me").textContent = "";
  $("login-view").hidden = false;
  $("conn-status").hidden = true;
  $("login-error").textContent = message;
  $("login-password").value = "";
  $("login-username").focus();
  setConnectionState("stopped");
  document.title = "chatserver";
}

export function setLoginError(message) {
  $("login-error").textContent = message;
}

export function showChat(me) {
  viewer = { name: me.name, admin: Boolean(me.admin) };
  closeThread();
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("conn-status").hidden = false;
  $("logout").hidden = false;
  $("me").textContent = me.name;
}

export function setConnectionState(state, retryInMs) {
  const node = $("conn-status");
  node.dataset.state = state;
  let text = STATE_TEXT[state] ?? state;
  if (state === "reconnecting" && retryInMs != null) {
    text = `reconnecting… (retry in ${Math.max(1, Math.round(retryInMs / 1000))} s)`;
  }
  node.textContent = text;
  $("composer-send").disabled = state !== "connected";
  $("thread-send").disabled = state !== "connected";
}

let noticeTimer = null;

/** A short, unobtrusive line above the composer; clears itself. */
export function showNotice(text, kind = "error") {
  const node = $("notice");
  node.textContent = text;
  node.dataset.kind = kind;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    node.textContent = "";
  }, NOTICE_MS);
}

export function announce(text) {
  $("announcer").textContent = text;
}

export function setTitle(unread) {
  document.title = unread > 0 ? `(${unread}) chatserver` : "chatserver";
}

export function setFormError(id, message) {
  $(id).textContent = message;
}

// -- room list and people --------------------------------------------------------------------

export function renderRoomList(state) {
  const list = $("room-list");
  // Re-rendering must not take keyboard focus away from the room button that had it.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.room : null;
  list.replaceChildren(...state.sortedRooms().map((room) => roomItem(state, room)));
  if (focused != null) {
    for (const button of list.querySelectorAll("button[data-room]")) {
      if (button.dataset.room === focused) button.focus();
    }
  }
}

function roomItem(state, room) {
  const isOpen = room.name === state.openRoom;
  const peer = state.peer(room);
  const status = peer ? state.presence.get(peer) ?? "unknown" : null;
  const count = room.capped || room.unread > UNREAD_SHOWN_MAX ? `${UNREAD_SHOWN_MAX}+`
    : String(room.unread);
  const unread = room.unread > 0 || room.capped
    ? el("span", { className: "unread" }, [
      count,
      el("span", { className: "visually-hidden", text: " unread" }),
    ])
    : null;
  const mentioned = room.mentions > 0
    ? el("span", { className: "mention-count", attrs: { title: "mentions of you" } }, [
      `@${room.mentions}`,
      el("span", { className: "visually-hidden", text: room.mentions === 1 ? " mention"
        : " mentions" }),
    ])
    : null;
  const button = el("button", {
    className: "room-button",
    attrs: { type: "button", "aria-current": isOpen ? "true" : false },
    dataset: { room: room.name },
  }, [
    status ? el("span", { className: `dot ${status}`, attrs: { title: status } }, [
      el("span", { className: "visually-hidden", text: `${status}: ` }),
    ]) : null,
    el("span", { className: "room-name", text: state.label(room) }),
    el("span", { className: `badge ${room.kind}`, text: room.kind }),
    mentioned,
    unread,
  ]);
  return el("li", {}, [button]);
}

export function renderPeople(state) {
  const people = [...state.presence.entries()].sort(([a], [b]) => a.localeCompare(b));
  const items = people.map(([name, status]) => el("li", { className: "person" }, [
    el("span", { className: `dot ${status}`, attrs: { "aria-hidden": "true" } }),
    el("span", { text: name }),
    el("span", { className: "person-status", text: status }),
  ]));
  if (items.length === 0) items.push(el("li", { className: "muted", text: "no one yet" }));
  $("people-list").replaceChildren(...items);
}

// -- the open room ---------------------------------------------------------------------------

export function renderRoomHeader(state, room) {
  $("room-title").textContent = room ? state.label(room) : "No room selected";
  const kind = $("room-kind");
  kind.textContent = room ? room.kind : "";
  kind.className = room ? `badge ${room.kind}` : "badge";
  $("composer-input").disabled = !room;
  $("composer-input").setAttribute("aria-label", room ? `Message ${state.label(room)}` : "Message");
}

// The open room's message nodes by seq: finds where a message goes without querying the DOM.
let shown = new Map();

/** Replace the message list with the room's messages and its streams in progress. Thread
 * replies are not in the main timeline: their root counts them, the thread panel shows them. */
export function renderMessages(room, { firstUnread = null } = {}) {
  shown = new Map();
  const items = room ? [...room.messages].filter(isTopLevel).map(shownElement) : [];
  const divider = firstUnread != null && shown.has(firstUnread) ? unreadDivider() : null;
  $("message-list").replaceChildren(...items);
  if (divider) shown.get(firstUnread).before(divider);
  renderLoadOlder(room);
  renderStreams(room);
  scrollToBottom();
  // More unread than fits: start reading at the line (reaching the bottom reads the room).
  if (!divider) return;
  const scroller = $("message-scroller");
  const above = divider.getBoundingClientRect().top - scroller.getBoundingClientRect().top;
  if (above < 0) scroller.scrollTop += above;
}

function unreadDivider() {
  return el("li", { className: "unread-divider", attrs: { role: "separator" } }, [
    el("span", { text: "New messages" }),
  ]);
}

/** The node a message goes before: the next shown one, or the "New messages" line above it
 * (older messages go above the line, not between it and the first unread). */
function insertionPoint(room, seq) {
  const next = nextShownNode(room, seq);
  const previous = next?.previousElementSibling;
  return previous?.classList.contains("unread-divider") ? previous : next;
}

export function setRoomBusy(busy) {
  $("message-scroller").setAttribute("aria-busy", String(busy));
}

export function renderLoadOlder(room, busy = false) {
  const button = $("load-older");
  button.hidden = !room || !room.hasOlder;
  button.disabled = busy;
  button.textContent = busy ? "Loading…" : "Load older messages";
}

/**
 * Put messages of the open room where their seqs belong, in one DOM pass (called at most once
 * per animation frame for live messages, and once per page of history). New messages at the
 * end keep the reader at the bottom if they were there; a page of older ones (`older`) keeps
 * what the reader sees in place.
 */
export function insertMessages(room, messages, { older = false } = {}) {
  // A streamed thread reply goes to its thread, not here; its placeholder here ends with it.
  for (const message of messages) {
    if (message.stream && !isTopLevel(message)) removeStream(message.stream);
  }
  const fresh = messages
    .filter((m) => isTopLevel(m) && !shown.has(m.seq) && room.messages.bySeq.has(m.seq))
    .sort((a, b) => a.seq - b.seq);
  if (fresh.length === 0) return;
  const scroller = $("message-scroller");
  const list = $("message-list");
  const stick = !older && nearBottom(); // the one layout read, before any write
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  // Consecutive messages that go before the same node share one insertion.
  let batch = document.createDocumentFragment();
  let batchBefore;
  for (const message of fresh) {
    const before = insertionPoint(room, message.seq);
    if (before !== batchBefore && batch.childNodes.length > 0) {
      list.insertBefore(batch, batchBefore ?? null);
      batch = document.createDocumentFragment();
    }
    batchBefore = before;
    batch.append(shownElement(message));
    if (message.stream) removeStream(message.stream);
  }
  list.insertBefore(batch, batchBefore ?? null);
  if (older) {
    renderLoadOlder(room);
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  } else if (stick) {
    scrollToBottom();
  }
}

/** Scroll a shown message into view and mark it for a moment; false when it is not shown. */
export function revealMessage(seq, { inThread = false } = {}) {
  const node = inThread ? threadNode(seq) : shown.get(seq);
  if (!node) return false;
  node.scrollIntoView({ block: "center" });
  node.classList.add("highlight");
  setTimeout(() => node.classList.remove("highlight"), 2_000);
  return true;
}

/** Drop the open room's oldest nodes (the state already dropped those messages). */
export function forgetOldest(room) {
  for (const [seq, node] of shown) {
    if (room.messages.bySeq.has(seq)) continue;
    node.remove();
    shown.delete(seq);
  }
  renderLoadOlder(room);
}

/** Whether the reader is at the newest message (so trimming above them goes unnoticed). */
export function atBottom() {
  return nearBottom();
}

function nextShownNode(room, seq) {
  const { seqs } = room.messages;
  for (let i = room.messages.insertionIndex(seq) + 1; i < seqs.length; i += 1) {
    const node = shown.get(seqs[i]);
    if (node) return node;
  }
  return null;
}

const isTopLevel = (message) => message.thread == null;

function shownElement(message) {
  const node = messageElement(message);
  shown.set(message.seq, node);
  return node;
}

/**
 * Show a message's new state (an edit, a deletion, a reaction, a reply counted on it) where
 * it is shown: the timeline and the thread panel. An edit in progress stays open.
 */
export function updateMessage(message) {
  const inTimeline = shown.get(message.seq);
  if (inTimeline) shown.set(message.seq, replaceMessageNode(inTimeline, message, {}));
  const inThread = threadNode(message.seq);
  if (inThread) {
    threadShown.set(message.seq, replaceMessageNode(inThread, message, { inThread: true }));
  }
}

function replaceMessageNode(node, message, options) {
  const fresh = messageElement(message, options);
  const refocus = carryEditor(node, fresh, message);
  const focusedPick = carryPicker(node, fresh, message);
  node.replaceWith(fresh);
  if (refocus) focusEditor(fresh);
  focusedPick?.focus();
  return fresh;
}

/** Move an open reaction picker from `node` to `fresh`, so that a reaction or a reply from
 * someone else does not close it under the reader's pointer (a deletion does); returns the
 * picker's button that had the focus, which moving it loses. */
function carryPicker(node, fresh, message) {
  const picker = node?.querySelector(".reaction-picker");
  if (!picker) return null;
  const focused = picker.contains(document.activeElement) ? document.activeElement : null;
  picker.remove();
  if (message.deleted) return null;
  fresh.append(picker);
  return focused;
}

/** Move an edit in progress from `node` to `fresh`, its redrawn self (unless the message
 * was deleted meanwhile); true when the editor had the focus, which moving it loses. */
function carryEditor(node, fresh, message) {
  const editor = node?.querySelector(".msg-editor");
  if (!editor || message.deleted) return false;
  const hadFocus = editor.contains(document.activeElement);
  fresh.querySelector(".msg-body").replaceWith(editor);
  return hadFocus;
}

function focusEditor(node) {
  node.querySelector(".msg-editor textarea")?.focus();
}

/** A message as a list item: who and when, the body, its file, reactions, thread, actions.
 * `inThread`: in the thread panel (no "reply" action, no reply count). */
function messageElement(message, { inThread = false } = {}) {
  const meta = el("div", { className: "msg-meta" }, [
    el("span", { className: "msg-user", text: message.user }),
    " ",
    timeElement(message.ts),
    message.aborted ? el("span", { className: "msg-note", text: " (interrupted)" }) : null,
    message.edited && !message.deleted ? editedElement(message.edited) : null,
  ]);
  const classes = ["msg"];
  if (message.deleted) classes.push("deleted");
  else if (message.user !== viewer.name && mentions(message, viewer.name)) {
    classes.push("mentions-me");
  }
  return el("li", { className: classes.join(" "), dataset: { seq: String(message.seq) } }, [
    meta,
    messageBody(message),
    message.deleted ? null : fileElement(message.file),
    message.deleted ? null : reactionsElement(message),
    inThread ? null : threadSummary(message),
    message.deleted ? null : actionsElement(message, inThread),
  ]);
}

function editedElement(ts) {
  const date = new Date(ts);
  const title = Number.isNaN(date.getTime()) ? "edited" : `edited ${fullDate.format(date)}`;
  return el("span", { className: "msg-edited", text: " (edited)", attrs: { title } });
}

function actionsElement(message, inThread) {
  const mine = message.user === viewer.name || viewer.admin;
  const action = (name, label, text) => el("button", {
    className: "msg-action", text,
    attrs: { type: "button", "aria-label": label, title: label }, dataset: { action: name },
  });
  return el("div", { className: "msg-actions" }, [
    inThread || message.thread != null ? null : action("reply", "Reply in thread", "Reply"),
    action("react", "Add a reaction", "☺+"),
    mine ? action("edit", "Edit message", "Edit") : null,
    mine ? action("delete", "Delete message", "Delete") : null,
  ]);
}

function reactionsElement(message) {
  const reactions = message.reactions ?? [];
  if (reactions.length === 0) return null;
  return el("div", { className: "reactions" }, reactions.map((reaction) => {
    const mine = reaction.users.includes(viewer.name);
    const others = reaction.count - reaction.users.length;
    const who = reaction.users.join(", ") + (others > 0 ? ` and ${others} more` : "");
    return el("button", {
      className: "reaction",
      attrs: {
        type: "button", "aria-pressed": String(mine),
        "aria-label": `${reaction.emoji} ${reaction.count}: ${who}`, title: who,
      },
      dataset: { action: "toggle-reaction", emoji: reaction.emoji },
    }, [el("span", { className: "reaction-emoji", text: reaction.emoji }), ` ${reaction.count}`]);
  }));
}

function threadSummary(message) {
  if (!message.replies) return null;
  const label = message.replies === 1 ? "1 reply" : `${message.replies} replies`;
  return el("button", {
    className: "thread-summary", text: label,
    attrs: { type: "button", "aria-label": `${label}: open the thread` },
    dataset: { action: "thread" },
  });
}

const SIZE_UNITS = ["bytes", "KB", "MB", "GB"];

function sizeText(size) {
  let value = Number(size) || 0;
  let unit = 0;
  while (value >= 1024 && unit < SIZE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${SIZE_UNITS[unit]}`;
}

/** A file: its thumbnail (images) linking to the file, and a link with its name and size.
 * The URLs are the server's own (`/api/files/...`), served with the room's permissions. */
function fileElement(file) {
  if (!file || typeof file.url !== "string" || !file.url.startsWith("/api/files/")) return null;
  const link = (children) => el("a", {
    attrs: { href: file.url, target: "_blank", rel: "noopener noreferrer" },
  }, children);
  const thumbnail = typeof file.thumbnail_url === "string"
    && file.thumbnail_url.startsWith("/api/files/")
    ? link([el("img", {
      className: "msg-thumbnail", attrs: { src: file.thumbnail_url, alt: file.name ?? "" },
    })])
    : null;
  return el("div", { className: "msg-file" }, [
    thumbnail,
    link([`📎 ${file.name ?? "file"}`]),
    el("span", { className: "msg-file-size", text: ` (${sizeText(file.size)})` }),
  ]);
}

/** Replace a message's body with an editor of its text (Enter saves, Escape cancels). */
export function startEditing(node, message) {
  const input = el("textarea", {
    className: "msg-edit-input", text: message.text ?? "",
    attrs: { rows: "3", "aria-label": "Edit message" },
  });
  const editor = el("form", { className: "msg-editor" }, [
    input,
    el("div", { className: "msg-editor-buttons" }, [
      el("button", { text: "Save", attrs: { type: "submit" } }),
      el("button", { text: "Cancel", attrs: { type: "button" }, dataset: { action: "cancel-edit" } }),
    ]),
  ]);
  node.querySelector(".msg-body, .msg-editor").replaceWith(editor);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

/** The reaction picker under a message (one open at a time); toggles. */
export function toggleReactionPicker(node) {
  const open = document.querySelector(".reaction-picker");
  const wasHere = open && node.contains(open);
  open?.remove();
  if (wasHere) return;
  const picker = el("div", {
    className: "reaction-picker", attrs: { role: "group", "aria-label": "Pick a reaction" },
  }, QUICK_REACTIONS.map((emoji) => el("button", {
    text: emoji, attrs: { type: "button", "aria-label": `React with ${emoji}` },
    dataset: { action: "pick-reaction", emoji },
  })));
  node.append(picker);
  picker.querySelector("button").focus();
}

export function closeReactionPicker() {
  document.querySelector(".reaction-picker")?.remove();
}

function messageBody(message) {
  const body = el("div", { className: "msg-body" });
  if (message.deleted) {
    body.textContent = "This message was deleted.";
  } else if (typeof message.html === "string") {
    // The one HTML insertion: `html` is the server's Markdown output after its nh3 allow-list
    // sanitiser (no script, no event handlers, no javascript: links).
    body.innerHTML = message.html;
  } else {
    body.textContent = message.text ?? "";
  }
  return body;
}

// Built once: `toLocaleString` with options makes a new Intl.DateTimeFormat per call, which
// was most of the time to render a 500-message history (about 0.4 ms a message).
const timeOfDay = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const dayAndTime = new Intl.DateTimeFormat([], { dateStyle: "short", timeStyle: "short" });
const fullDate = new Intl.DateTimeFormat([], { dateStyle: "full", timeStyle: "medium" });

let today = { from: 0, to: 0 }; // local midnight to midnight, as timestamps

function isToday(time) {
  const now = Date.now();
  if (now >= today.to) {
    const midnight = new Date(now);
    midnight.setHours(0, 0, 0, 0);
    const next = new Date(midnight);
    next.setDate(next.getDate() + 1);
    today = { from: midnight.getTime(), to: next.getTime() };
  }
  return time >= today.from && time < today.to;
}

function timeElement(ts) {
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return el("time", { text: "" });
  const sameDay = isToday(date.getTime());
  const text = (sameDay ? timeOfDay : dayAndTime).format(date);
  return el("time", { text, attrs: { datetime: ts, title: fullDate.format(date) } });
}

// -- the thread panel ------------------------------------------------------------------------

// The thread panel's message nodes (root and replies) by seq.
let threadShown = new Map();

function threadNode(seq) {
  return threadShown.get(seq) ?? null;
}

/**
 * Show a thread: its root (when held) and its replies in seq order, scrolled to the newest
 * when the reader was there. `rootSeq` names the thread when the root is not held.
 */
export function renderThread(roomLabel, rootSeq, root, replies, { hasOlder = false,
  busy = false, streams = [] } = {}) {
  const scroller = $("thread-scroller");
  const wasOpen = !$("thread-panel").hidden;
  const stick = !wasOpen
    || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  $("thread-panel").hidden = false;
  $("thread-panel").dataset.root = String(rootSeq);
  document.body.classList.add("thread-open");
  $("thread-title").textContent = `Thread in ${roomLabel}`;
  // An edit in progress stays open (as in updateMessage): its form moves to the new node.
  const before = threadShown;
  let refocus = null;
  threadShown = new Map();
  const threadElement = (message) => {
    const node = messageElement(message, { inThread: true });
    if (carryEditor(before.get(message.seq), node, message)) refocus = node;
    threadShown.set(message.seq, node);
    return node;
  };
  const rootNode = root ? threadElement(root)
    : el("li", { className: "msg muted", text: "The thread's first message is not loaded." });
  $("thread-root").replaceChildren(rootNode);
  $("thread-list").replaceChildren(...[...replies].map(threadElement));
  $("thread-streams").replaceChildren(...streams.map(streamElement));
  if (refocus) focusEditor(refocus);
  const older = $("thread-older");
  older.hidden = !hasOlder;
  older.disabled = busy;
  older.textContent = busy ? "Loading…" : "Load older replies";
  scroller.setAttribute("aria-busy", String(busy));
  $("thread-input").setAttribute("aria-label", `Reply in the thread (${roomLabel})`);
  if (stick) scroller.scrollTop = scroller.scrollHeight;
}

export function closeThread() {
  $("thread-panel").hidden = true;
  delete $("thread-panel").dataset.root;
  document.body.classList.remove("thread-open");
  threadShown = new Map();
  $("thread-root").replaceChildren();
  $("thread-list").replaceChildren();
  $("thread-streams").replaceChildren();
}

// -- streams and typing ----------------------------------------------------------------------

/** The open room's streams in progress; a thread's reply streams only in its open panel. */
export function renderStreams(room) {
  const items = room ? [...room.streams.values()].filter(isTopLevel).map(streamElement) : [];
  $("stream-list").replaceChildren(...items);
}

/** Where a stream shows: the room's timeline, its thread's open panel, or nowhere. */
function streamPlace(stream) {
  if (stream.thread == null) return { list: $("stream-list"), scroller: $("message-scroller") };
  if ($("thread-panel").dataset.root !== String(stream.thread)) return null;
  return { list: $("thread-streams"), scroller: $("thread-scroller") };
}

export function updateStream(stream) {
  const place = streamPlace(stream);
  if (!place) return;
  const { scroller } = place;
  const stick = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight
    < NEAR_BOTTOM_PX;
  const node = streamNode(stream.id);
  if (node) node.querySelector(".stream-text").textContent = stream.text;
  else place.list.append(streamElement(stream));
  if (stick) scroller.scrollTop = scroller.scrollHeight;
}

export function removeStream(id) {
  streamNode(id)?.remove();
}

function streamNode(id) {
  for (const list of [$("stream-list"), $("thread-streams")]) {
    for (const node of list.children) if (node.dataset.stream === id) return node;
  }
  return null;
}

function streamElement(stream) {
  return el("li", { className: "msg streaming", dataset: { stream: stream.id } }, [
    el("div", { className: "msg-meta" }, [
      el("span", { className: "msg-user", text: stream.user }),
      el("span", { className: "msg-note", text: " is writing…" }),
    ]),
    el("div", { className: "msg-body stream-text", text: stream.text }),
  ]);
}

export function renderTyping(names) {
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = "several people are typing…";
  $("typing").textContent = text;
}

// -- scrolling -------------------------------------------------------------------------------

let stuckToBottom = true;

/** Keep the newest message in view across resizes (rotating a phone, the keyboard opening). */
export function bindScrolling() {
  const scroller = $("message-scroller");
  let height = scroller.clientHeight;
  scroller.addEventListener("scroll", () => {
    // A scroll caused by the box resizing is not the reader moving away from the bottom.
    if (scroller.clientHeight === height) stuckToBottom = nearBottom();
  }, { passive: true });
  new ResizeObserver(() => {
    height = scroller.clientHeight;
    if (stuckToBottom) scrollToBottom();
  }).observe(scroller);
}

function nearBottom() {
  const s = $("message-scroller");
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  const s = $("message-scroller");
  s.scrollTop = s.scrollHeight;
}
