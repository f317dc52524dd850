// The web UI's entry point: wires the HTTP API, the WebSocket connection, the state and the
// view together. Loaded by index.html as an ES module; no build step.

import * as api from "./api.js";
import { ChatConnection } from "./connection.js";
import { ChatState, TYPING_SHOW_MS } from "./state.js";
import * as view from "./view.js";

// History pages are the protocol's largest (fewest round trips); a room opened for the first
// time fills up to INITIAL_HISTORY messages, newest page first, so scrolling back is instant.
const HISTORY_PAGE = 200;
const INITIAL_HISTORY = 500;
// The open room keeps at most this many messages in the DOM while the reader is at the bottom
// (hours of a busy room would otherwise grow the page without end); scrolling back reloads.
const MAX_OPEN_MESSAGES = 1_000;
const TRIM_SLACK = 200; // trim in chunks, not one node per frame
// No frame announces a new room (someone opening a DM with us): re-read the list now and then.
const ROOMS_REFRESH_MS = 60_000;
const TYPING_SEND_MS = 2_000;
const ANNOUNCE_CHARS = 200;
// Screen readers get at most one announcement this often; a busy room is summarised.
const ANNOUNCE_EVERY_MS = 1_500;
// While the page is hidden, animation frames stop: render (unread counts, title) on a timer.
const HIDDEN_RENDER_MS = 500;
const UNKNOWN_ROOM = "That room does not exist or is not visible to you.";

const $ = (id) => document.getElementById(id);
const utf8 = new TextEncoder();

let state = null;       // ChatState while logged in
let conn = null;        // ChatConnection while logged in
let hellos = 0;
// After a reconnect, the open room's presence is asked for again once it is re-joined.
let presenceAfterRejoin = false;
let roomsTimer = null;
const typingSent = new Map(); // room -> time (ms) the last `typing` went out
// Live messages are rendered once per animation frame, however many arrived meanwhile.
let pendingRender = [];
let renderScheduled = false;
let roomListDirty = false;
let unannounced = [];
let announceTimer = null;

// -- session ---------------------------------------------------------------------------------

async function boot() {
  bindForms();
  bindChat();
  view.bindScrolling();
  try {
    await enterChat(await api.me());
  } catch (error) {
    view.showLogin(error.status === 401 ? "" : error.message);
  }
}

async function enterChat(me) {
  state = new ChatState(me);
  hellos = 0;
  presenceAfterRejoin = false;
  typingSent.clear();
  pendingRender = [];
  roomListDirty = false;
  unannounced = [];
  view.showChat(me);
  view.renderPeople(state);
  view.renderRoomHeader(state, null);
  view.renderMessages(null);
  conn = new ChatConnection({ checkAuth: api.sessionValid });
  bindConnection(conn);
  conn.start();
  roomsTimer = setInterval(refreshRooms, ROOMS_REFRESH_MS);
  await refreshRooms();
  if (!state) return; // the session ended meanwhile
  const wanted = roomFromHash();
  if (wanted && !state.rooms.has(wanted)) view.showNotice(UNKNOWN_ROOM);
  const first = state.rooms.has(wanted) ? wanted
    : state.rooms.has("general") ? "general"
      : state.sortedRooms()[0]?.name;
  if (first) await openRoom(first);
}

/** The room named in the URL fragment (`#general`), or "". */
function roomFromHash() {
  try {
    return decodeURIComponent(location.hash.slice(1));
  } catch {
    return ""; // malformed percent-encoding
  }
}

function leaveChat(message = "") {
  conn?.stop();
  conn = null;
  clearInterval(roomsTimer);
  state = null;
  view.showLogin(message);
}

async function onLogin(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  view.setLoginError("");
  try {
    const { user } = await api.login($("login-username").value, $("login-password").value);
    await enterChat(user);
  } catch (error) {
    view.setLoginError(error.message); // the server's sentence, e.g. "wrong username or password"
    $("login-password").select();
  } finally {
    button.disabled = false;
  }
}

async function onLogout() {
  leaveChat(); // stops the socket first, so the server's 1008 close is not taken for a drop
  try {
    await api.logout();
  } catch (error) {
    if (error.status !== 401) view.setLoginError(`Logging out failed: ${error.message}`);
  }
}

// -- rooms -----------------------------------------------------------------------------------

/** Reload the room list; join every room this user is a member of (for unread counts). */
async function refreshRooms() {
  if (!state) return;
  let listings;
  try {
    listings = await api.listRooms();
  } catch (error) {
    if (error.status === 401) return leaveChat("Your session has ended; log in again.");
    view.showNotice(`Could not load rooms: ${error.message}`);
    return;
  }
  if (!state) return;
  for (const listing of listings) {
    const room = state.upsertRoom(listing);
    if (room.member) joinRoom(room.name).catch(() => {}); // joinRoom shows the error
  }
  view.renderRoomList(state);
}

function joinRoom(name) {
  return conn.join(name).catch((error) => {
    view.showNotice(`Cannot join ${name}: ${error.message}`);
    throw error;
  });
}

async function openRoom(name, { focus = false } = {}) {
  const room = state?.open(name);
  if (!room) return;
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  view.renderRoomList(state);
  view.renderRoomHeader(state, room);
  view.renderMessages(room);
  view.renderTyping(state.typingIn(room));
  view.setTitle(state.totalUnread());
  if (focus) $("composer-input").focus();
  // aria-busy until the room is joined and its history is in: assistive technology (and the
  // browser tests) know when the list is complete.
  view.setRoomBusy(true);
  try {
    performance.mark("room:open");
    const joined = await joinRoom(name);
    performance.mark("room:joined");
    room.member = true;
    // Asked for after the join: changes from then on reach us, so none falls in between.
    presenceAfterRejoin = false;
    const presence = fetchPresence(room);
    if (!room.historyLoaded) await fillHistory(room, joined.seq);
    await presence;
  } catch {
    // joinRoom showed why
  } finally {
    if (state?.openRoom === name) view.setRoomBusy(false);
  }
}

/**
 * A room opened for the first time: its newest INITIAL_HISTORY messages up to the join's
 * seq (live frames follow it), in pages of HISTORY_PAGE fetched at once, cut by seq, and
 * rendered in one pass — one round trip instead of one per page. Seqs need not be
 * contiguous: a page holds the newest messages below its cut, so neighbouring pages overlap
 * rather than leave a hole.
 */
async function fillHistory(room, joinedSeq) {
  const cuts = [];
  for (let before = joinedSeq + 1, left = INITIAL_HISTORY; left > 0 && before > 1;
    before -= HISTORY_PAGE, left -= HISTORY_PAGE) {
    cuts.push({ before, limit: Math.min(HISTORY_PAGE, left) });
  }
  room.loading = true;
  try {
    const pages = await Promise.all(cuts.map((cut) => api.roomMessages(room.name, cut)));
    performance.mark("room:fetched");
    if (state?.rooms.get(room.name) !== room) return; // logged out meanwhile
    for (const page of pages) state.addHistory(room.name, page);
    room.hasOlder = pages.length > 0 && pages[pages.length - 1].more;
    room.historyLoaded = true;
    if (state?.openRoom === room.name) view.renderMessages(room);
    performance.mark("room:rendered");
  } catch (error) {
    view.showNotice(`Could not load messages: ${error.message}`);
    if (state?.openRoom === room.name) view.renderLoadOlder(room);
  } finally {
    room.loading = false;
  }
}

/**
 * Who of the room's members is online now, merged into the presence map (change frames that
 * arrived meanwhile win: they are newer). Best effort: the map follows the changes without
 * it, so a failure (503 while the broker is unreachable) shows nothing.
 */
async function fetchPresence(room) {
  const asked = state;
  if (!asked) return;
  const mark = asked.presenceMark();
  let snapshot;
  try {
    snapshot = await api.roomPresence(room.name);
  } catch {
    return; // refused or unreachable: the list keeps following changes; a reconnect asks again
  }
  if (state !== asked || !Array.isArray(snapshot?.online)) return; // logged out meanwhile
  const online = snapshot.online.map(String);
  // A direct room's members are known: the one not listed is offline (not just unknown).
  const offline = room.kind === "direct" && !snapshot.truncated
    ? room.members.filter((name) => !online.includes(name)) : [];
  if (!state.seedPresence(mark, online, offline)) return;
  view.renderPeople(state);
  view.renderRoomList(state);
}

/**
 * One page of history before the oldest message held (the latest page when none is);
 * true when a page was added. The first page replaces the list; later ones go on top.
 */
async function loadOlder(room, limit = HISTORY_PAGE) {
  if (room.loading || limit <= 0) return false;
  room.loading = true;
  const isOpen = () => state?.openRoom === room.name;
  if (isOpen()) view.renderLoadOlder(room, true);
  try {
    const page = await api.roomMessages(room.name, {
      before: room.messages.oldest ?? undefined, limit,
    });
    if (state?.rooms.get(room.name) !== room) return false; // logged out meanwhile
    state.addHistory(room.name, page);
    room.hasOlder = page.more;
    const first = !room.historyLoaded;
    room.historyLoaded = true;
    if (isOpen()) {
      if (first) view.renderMessages(room);
      else view.insertMessages(room, page.messages, { older: true });
    }
    return true;
  } catch (error) {
    view.showNotice(`Could not load messages: ${error.message}`);
    if (isOpen()) view.renderLoadOlder(room);
    return false;
  } finally {
    room.loading = false;
  }
}

async function onCreateRoom(event) {
  event.preventDefault();
  const name = $("new-room-name").value.trim();
  const isPrivate = $("new-room-private").checked;
  view.setFormError("create-room-error", "");
  try {
    const listing = await api.createRoom(name, isPrivate);
    state.upsertRoom(listing);
    $("create-room-form").reset();
    await openRoom(listing.name, { focus: true });
  } catch (error) {
    view.setFormError("create-room-error", error.message);
  }
}

async function onDirect(event) {
  event.preventDefault();
  const user = $("direct-user").value.trim();
  view.setFormError("direct-error", "");
  try {
    const listing = await api.openDirect(user);
    state.upsertRoom(listing);
    $("direct-form").reset();
    await openRoom(listing.name, { focus: true });
  } catch (error) {
    view.setFormError("direct-error", error.message);
  }
}

// -- composing -------------------------------------------------------------------------------

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
}

function onComposerInput() {
  const room = state?.openRoom;
  if (!room || !$("composer-input").value) return;
  const now = Date.now();
  if (now - (typingSent.get(room) ?? 0) < TYPING_SEND_MS) return;
  typingSent.set(room, now);
  conn.typing(room);
}

function onSend(event) {
  event.preventDefault();
  const input = $("composer-input");
  const room = state?.openRoom;
  const text = input.value;
  if (!room || !text.trim()) return;
  const limit = conn.hello?.limits?.max_message_bytes;
  const size = utf8.encode(text).length;
  if (limit && size > limit) {
    view.showNotice(`The message is ${size} bytes; the limit is ${limit}.`);
    return;
  }
  if (!conn.connected) {
    view.showNotice("Not connected; the message was not sent.");
    return;
  }
  input.value = "";
  typingSent.delete(room);
  conn.send(room, text).catch((error) => {
    if (error.code === "connection_lost") {
      view.showNotice("The connection dropped before the server confirmed the message; " +
        "it appears in the room if it was stored.");
      return;
    }
    view.showNotice(error.message);
    if (!input.value && state?.openRoom === room) input.value = text; // let the user retry
  });
}

// -- server frames ---------------------------------------------------------------------------

function bindConnection(connection) {
  const on = (type, handler) => connection.addEventListener(type, (event) => {
    if (conn === connection) handler(event.detail);
  });
  on("state", ({ state: s, retryInMs }) => view.setConnectionState(s, retryInMs));
  on("hello", onHello);
  on("joined", onJoined);
  on("message", onMessage);
  on("frame", onFrame);
  on("unauthorized", () => leaveChat("Your session has ended; log in again."));
}

function onHello(hello) {
  hellos += 1;
  state.forgetStreams(); // the server re-announces live streams after each join
  // Whatever changed while we were away is unknown now; the open room's snapshot is asked
  // for again once its re-join (sent right after this) is answered.
  state.resetPresence();
  state.setPresence(hello.user, "online");
  if (hellos > 1) presenceAfterRejoin = true;
  view.renderStreams(state.rooms.get(state.openRoom));
  view.renderPeople(state);
  view.renderRoomList(state);
  if (hellos > 1) refreshRooms(); // rooms made or DMs opened while we were away
}

function onJoined(joined) {
  if (!presenceAfterRejoin || joined.room !== state.openRoom) return;
  presenceAfterRejoin = false;
  const room = state.rooms.get(joined.room);
  if (room) fetchPresence(room);
}

function onMessage(message) {
  if (state.addMessage(message) < 0) return;
  if (state.openRoom === message.room) pendingRender.push(message);
  else roomListDirty = true;
  scheduleRender();
}

function scheduleRender() {
  if (renderScheduled) return;
  renderScheduled = true;
  if (document.hidden) setTimeout(flushRender, HIDDEN_RENDER_MS);
  else requestAnimationFrame(flushRender);
}

/** Everything that arrived since the last frame, in one DOM pass. */
function flushRender() {
  renderScheduled = false;
  const batch = pendingRender;
  pendingRender = [];
  if (!state) return;
  const room = state.rooms.get(state.openRoom);
  // Messages of a room closed meanwhile are in the state; opening it renders them.
  const mine = room ? batch.filter((message) => message.room === room.name) : [];
  if (mine.length > 0) {
    view.insertMessages(room, mine);
    view.renderTyping(state.typingIn(room));
    trimOpenRoom(room);
    announce(mine.filter((message) => message.user !== state.me.name));
  }
  if (roomListDirty) {
    roomListDirty = false;
    view.renderRoomList(state);
    view.setTitle(state.totalUnread());
  }
}

function trimOpenRoom(room) {
  if (room.messages.size <= MAX_OPEN_MESSAGES + TRIM_SLACK || !view.atBottom()) return;
  room.messages.trim(MAX_OPEN_MESSAGES);
  room.hasOlder = true;
  view.forgetOldest(room);
}

/** Tell screen readers about new messages: the first at once, then a summary per interval. */
function announce(messages) {
  unannounced.push(...messages);
  if (announceTimer === null) flushAnnouncement();
}

function flushAnnouncement() {
  announceTimer = null;
  if (unannounced.length === 0) return;
  const last = unannounced[unannounced.length - 1];
  const line = `${last.user}: ${String(last.text).slice(0, ANNOUNCE_CHARS)}`;
  view.announce(unannounced.length === 1 ? line
    : `${unannounced.length} new messages; the last, ${line}`);
  unannounced = [];
  announceTimer = setTimeout(flushAnnouncement, ANNOUNCE_EVERY_MS);
}

const FRAME_HANDLERS = {
  typing(frame) {
    const room = state.noteTyping(frame.room, frame.user);
    if (!room || room.name !== state.openRoom) return;
    view.renderTyping(state.typingIn(room));
    setTimeout(() => {
      if (state?.openRoom === room.name) view.renderTyping(state.typingIn(room));
    }, TYPING_SHOW_MS + 50);
  },
  presence(frame) {
    state.setPresence(frame.user, frame.status === "online" ? "online" : "offline");
    view.renderPeople(state);
    view.renderRoomList(state);
  },
  stream_start(frame) {
    const stream = state.startStream(frame);
    if (!stream || frame.room !== state.openRoom) return;
    view.updateStream(stream);
    view.renderTyping(state.typingIn(state.rooms.get(frame.room)));
  },
  stream_delta(frame) {
    const stream = state.appendStream(frame);
    if (stream && frame.room === state.openRoom) view.updateStream(stream);
  },
  stream_end(frame) {
    state.endStream(frame);
    view.removeStream(frame.stream);
  },
  error(frame) {
    view.showNotice(String(frame.message ?? frame.code ?? "error"));
  },
};

function onFrame(frame) {
  FRAME_HANDLERS[frame.op]?.(frame);
}

// -- wiring ----------------------------------------------------------------------------------

function bindForms() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", onLogout);
  $("create-room-form").addEventListener("submit", onCreateRoom);
  $("direct-form").addEventListener("submit", onDirect);
  $("composer").addEventListener("submit", onSend);
  $("composer-input").addEventListener("keydown", onComposerKey);
  $("composer-input").addEventListener("input", onComposerInput);
}

function bindChat() {
  $("room-list").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-room]");
    if (button) openRoom(button.dataset.room, { focus: true });
  });
  $("load-older").addEventListener("click", () => {
    const room = state?.rooms.get(state.openRoom);
    if (room) loadOlder(room);
  });
  // Links in messages open in a new tab, so the chat stays where it is.
  $("message-list").addEventListener("click", (event) => {
    const link = event.target.closest(".msg-body a[href]");
    if (!link) return;
    event.preventDefault();
    window.open(link.href, "_blank", "noopener,noreferrer");
  });
  window.addEventListener("focus", () => refreshRooms());
  window.addEventListener("hashchange", () => {
    const name = roomFromHash();
    if (!state || name === state.openRoom) return;
    if (state.rooms.has(name)) openRoom(name);
    else if (name) view.showNotice(UNKNOWN_ROOM);
  });
  // Scrolling back to the top loads the next older page, as the button does.
  new IntersectionObserver((entries) => {
    const room = state?.rooms.get(state.openRoom);
    if (!room?.historyLoaded || !room.hasOlder) return;
    if (entries.some((entry) => entry.isIntersecting)) loadOlder(room);
  }, { root: $("message-scroller") }).observe($("load-older"));
}

boot();
