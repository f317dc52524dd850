// Rendering: builds and updates DOM from state. Every string from the server or a user goes in
// as textContent (through `el`). The single exception is a message's `html` field, which the
// server rendered from Markdown and sanitised with an allow-list (see `messageBody`).

const $ = (id) => document.getElementById(id);
const NEAR_BOTTOM_PX = 80;
const NOTICE_MS = 8_000;

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
  const unread = room.unread > 0
    ? el("span", { className: "unread" }, [
      String(room.unread),
      el("span", { className: "visually-hidden", text: " unread" }),
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

/** Replace the message list with the room's messages and its streams in progress. */
export function renderMessages(room) {
  shown = new Map();
  const items = room ? [...room.messages].map(shownElement) : [];
  $("message-list").replaceChildren(...items);
  renderLoadOlder(room);
  renderStreams(room);
  scrollToBottom();
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
  const fresh = messages.filter((m) => !shown.has(m.seq) && room.messages.bySeq.has(m.seq))
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
    const before = nextShownNode(room, message.seq);
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

function shownElement(message) {
  const node = messageElement(message);
  shown.set(message.seq, node);
  return node;
}

function messageElement(message) {
  const meta = el("div", { className: "msg-meta" }, [
    el("span", { className: "msg-user", text: message.user }),
    " ",
    timeElement(message.ts),
    message.aborted ? el("span", { className: "msg-note", text: " (interrupted)" }) : null,
  ]);
  return el("li", { className: "msg", dataset: { seq: String(message.seq) } },
    [meta, messageBody(message)]);
}

function messageBody(message) {
  const body = el("div", { className: "msg-body" });
  if (typeof message.html === "string") {
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

// -- streams and typing ----------------------------------------------------------------------

export function renderStreams(room) {
  const items = room ? [...room.streams.values()].map(streamElement) : [];
  $("stream-list").replaceChildren(...items);
}

export function addStream(stream) {
  const stick = nearBottom();
  $("stream-list").append(streamElement(stream));
  if (stick) scrollToBottom();
}

export function updateStream(stream) {
  const node = streamNode(stream.id);
  if (!node) return addStream(stream);
  const stick = nearBottom();
  node.querySelector(".stream-text").textContent = stream.text;
  if (stick) scrollToBottom();
}

export function removeStream(id) {
  streamNode(id)?.remove();
}

function streamNode(id) {
  for (const node of $("stream-list").children) if (node.dataset.stream === id) return node;
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
