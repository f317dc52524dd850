// The web UI's entry point: wires the HTTP API, the WebSocket connection, the state and the
// view together. Loaded by index.html as an ES module; no build step.

import * as api from "./api.js";
import { ChatConnection } from "./connection.js";
import { bindSearch, closeSearch } from "./search.js";
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
// `room_added` announces new rooms while connected; the list is still re-read now and then
// (rooms made by the command line are not announced, and counts drift while trimmed).
const ROOMS_REFRESH_MS = 60_000;
const TYPING_SEND_MS = 2_000;
const ANNOUNCE_CHARS = 200;
// A `read` goes out at most this often per room (the last position wins).
const READ_SEND_MS = 1_000;
// Screen readers get at most one announcement this often; a busy room is summarised.
const ANNOUNCE_EVERY_MS = 1_500;
// While the page is hidden, animation frames stop: render (unread counts, title) on a timer.
const HIDDEN_RENDER_MS = 500;
const UNKNOWN_ROOM = "That room does not exist or is not visible to you.";
// Opening a search result loads older history until its message is there, at most this much.
const SEARCH_HISTORY_PAGES = 10;

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
let changedMessages = new Set(); // messages edited, deleted, reacted to or replied to
let threadDirty = false;
let renderScheduled = false;
let roomListDirty = false;
// The open thread: {room, root, more, loading} or null.
let thread = null;
const readTimers = new Map(); // room -> timer of the pending `read`
let unannounced = [];
let announceTimer = null;

// -- session ---------------------------------------------------------------------------------

async function boot() {
  bindForms();
  bindChat();
  bindSearch({ open: openSearchResult });
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
  changedMessages = new Set();
  threadDirty = false;
  thread = null;
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
  closeSearch();
  conn?.stop();
  conn = null;
  clearInterval(roomsTimer);
  for (const timer of readTimers.values()) clearTimeout(timer);
  readTimers.clear();
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

/**
 * Reload the room list with the server's unread and mention counts; join every room this
 * user is a member of, so the counts stay current. A first join replays what came after the
 * counts' seq: nothing falls between the count and the live messages.
 */
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
    if (room.member && !conn.isJoined(room.name)) {
      joinRoom(room.name, { after: room.countedSeq }).catch(() => {}); // it shows the error
    }
  }
  view.renderRoomList(state);
  view.setTitle(state.totalUnread());
}

function joinRoom(name, options) {
  return conn.join(name, options).catch((error) => {
    view.showNotice(`Cannot join ${name}: ${error.message}`);
    throw error;
  });
}

async function openRoom(name, { focus = false } = {}) {
  const room = state?.open(name);
  if (!room) return;
  if (thread && thread.room !== name) closeThread();
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  view.renderRoomList(state);
  view.renderRoomHeader(state, room);
  renderRoom(room);
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
    markReadIfSeen(room);
    await presence;
  } catch {
    // joinRoom showed why
  } finally {
    if (state?.openRoom === name) view.setRoomBusy(false);
  }
}

/** Draw the open room's timeline, with the "New messages" line where reading starts. */
function renderRoom(room) {
  view.renderMessages(room, { firstUnread: state.firstUnread(room) });
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
    state.flushPendingEvents(room);
    room.hasOlder = pages.length > 0 && pages[pages.length - 1].more;
    room.historyLoaded = true;
    if (state?.openRoom === room.name) renderRoom(room);
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
    state.flushPendingEvents(room); // before the page is drawn, which shows the result
    room.hasOlder = page.more;
    const first = !room.historyLoaded;
    room.historyLoaded = true;
    if (isOpen()) {
      if (first) renderRoom(room);
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
  sendFrom($("composer-input"), state?.openRoom, null);
}

function onThreadSend(event) {
  event.preventDefault();
  if (thread) sendFrom($("thread-input"), thread.room, thread.root);
}

/** Send what `input` holds to `room` (a reply when `root` is a seq); the input is emptied,
 * and refilled when the server refuses the message, so the user can retry. */
function sendFrom(input, room, root) {
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
  conn.send(room, text, root).catch((error) => {
    if (error.code === "connection_lost") {
      view.showNotice("The connection dropped before the server confirmed the message; " +
        "it appears in the room if it was stored.");
      return;
    }
    view.showNotice(error.message);
    if (!input.value) input.value = text; // let the user retry
  });
}

/** A file chosen in the room's composer, or in the thread's (a reply there). */
async function onFileChosen(event) {
  const input = event.currentTarget;
  const file = input.files?.[0];
  const inThread = input.id === "thread-file";
  const room = inThread ? thread?.room : state?.openRoom;
  const root = inThread ? thread?.root : null;
  input.value = ""; // choosing the same file again fires `change` again
  if (!file || !room) return;
  view.showNotice(`Uploading ${file.name}…`, "info");
  try {
    // The message arrives over the socket like any other.
    await api.uploadFile(room, file, { thread: root });
    view.showNotice(`Uploaded ${file.name}.`, "info");
  } catch (error) {
    view.showNotice(`Could not upload ${file.name}: ${error.message}`);
  }
}

// -- reading ---------------------------------------------------------------------------------

/**
 * The open room is being read when the page is visible and scrolled to the newest message:
 * everything held is read then. The server hears of it at most every READ_SEND_MS (the
 * last position), and tells the user's other devices.
 */
function markReadIfSeen(room) {
  if (!room || state?.openRoom !== room.name || !room.historyLoaded) return;
  if (document.visibilityState !== "visible" || !view.atBottom()) return;
  const newest = room.messages.newest;
  if (newest == null || !state.markRead(room, newest)) return;
  roomListDirty = true;
  scheduleRender();
  if (readTimers.has(room.name)) return; // a send is due: it takes the newest position
  sendRead(room);
  // Reads in the next READ_SEND_MS wait for this timer, which sends the last of them.
  readTimers.set(room.name, setTimeout(() => {
    readTimers.delete(room.name);
    if (room.readSeq > room.readSent) sendRead(room);
  }, READ_SEND_MS));
}

function sendRead(room) {
  if (!conn?.connected || !conn.isJoined(room.name)) return; // the next read or listing retries
  room.readSent = room.readSeq;
  conn.read(room.name, room.readSeq).catch(() => {});
}

// -- search results --------------------------------------------------------------------------

/**
 * Show a search result's message: its room, and its thread for a reply; older history is
 * loaded (up to SEARCH_HISTORY_PAGES pages) until the message is there.
 */
async function openSearchResult(result) {
  const room = state?.rooms.get(result.room);
  if (!room) return view.showNotice(UNKNOWN_ROOM);
  if (state.openRoom !== room.name) await openRoom(room.name);
  if (result.thread != null) {
    closeSearch(); // the thread takes the side panel
    await openThread(room, result.thread);
    if (!view.revealMessage(result.seq, { inThread: true })) {
      view.showNotice("That reply is older than the replies loaded; use Load older replies.");
    }
    return;
  }
  for (let page = 0; !room.messages.bySeq.has(result.seq) && page < SEARCH_HISTORY_PAGES;
    page += 1) {
    if (!room.hasOlder || !(await loadOlder(room))) break;
  }
  if (!view.revealMessage(result.seq)) {
    view.showNotice("That message is too far back to show here; scroll up to load it.");
  }
}

// -- threads ---------------------------------------------------------------------------------

/** Show a thread beside the room: the replies held (live ones join), then its history. */
async function openThread(room, root) {
  closeSearch();
  if (thread && (thread.room !== room.name || thread.root !== root)) closeThread();
  if (!thread) thread = { room: room.name, root, more: false, loading: false };
  state.openThread(room, root);
  renderThread();
  $("thread-input").focus();
  await loadThreadPage(room, null);
}

/** The newest page of the thread's replies, or the page before `before`. */
async function loadThreadPage(room, before) {
  const open = thread;
  if (!open || open.loading) return;
  open.loading = true;
  renderThread();
  try {
    const page = await api.roomMessages(room.name, {
      thread: open.root, before: before ?? undefined, limit: HISTORY_PAGE,
    });
    if (thread !== open) return;
    state.addThreadPage(room, open.root, page);
    if (before == null || !page.more) open.more = page.more;
  } catch (error) {
    view.showNotice(`Could not load the thread: ${error.message}`);
  } finally {
    open.loading = false;
    if (thread === open) renderThread();
  }
}

function renderThread() {
  const room = thread && state?.rooms.get(thread.room);
  if (!room) return;
  const streams = [...room.streams.values()].filter((stream) => stream.thread === thread.root);
  view.renderThread(state.label(room), thread.root, room.find(thread.root),
    room.threads.get(thread.root) ?? [], { hasOlder: thread.more, busy: thread.loading, streams });
}

function closeThread() {
  if (thread) state?.rooms.get(thread.room)?.threads.delete(thread.root);
  thread = null;
  view.closeThread();
}

// -- acting on a message ---------------------------------------------------------------------

/** The message a click or key landed on, with its room: {room, message, node} or null. */
function messageAt(target) {
  const node = target.closest("li.msg[data-seq]");
  const room = state?.rooms.get(node?.closest("#thread-panel") ? thread?.room : state.openRoom);
  const message = node && room?.find(Number(node.dataset.seq));
  return message ? { room, message, node } : null;
}

function onMessageAction(event) {
  const button = event.target.closest("button[data-action]");
  const at = button && messageAt(button);
  if (!at) return;
  const { room, message, node } = at;
  const fail = (error) => view.showNotice(error.message);
  switch (button.dataset.action) {
    case "reply":
    case "thread":
      openThread(room, message.seq);
      break;
    case "react":
      view.toggleReactionPicker(node);
      break;
    case "pick-reaction":
      view.closeReactionPicker();
      react(room, message, button.dataset.emoji, false).catch(fail);
      break;
    case "toggle-reaction": {
      const emoji = button.dataset.emoji;
      const mine = (message.reactions ?? []).some((r) => r.emoji === emoji
        && r.users.includes(state.me.name));
      react(room, message, emoji, mine).catch(fail);
      break;
    }
    case "edit":
      view.startEditing(node, message);
      break;
    case "cancel-edit":
      stopEditing(node, message);
      break;
    case "delete":
      // A native dialog: accessible, and it blocks a second click.
      if (window.confirm("Delete this message? Its text and file are erased for everyone.")) {
        conn.deleteMessage(room.name, message.seq).catch(fail);
      }
      break;
    default:
  }
}

function stopEditing(node, message) {
  node.querySelector(".msg-editor")?.remove();
  view.updateMessage(message);
}

async function onEditSubmit(event) {
  const form = event.target.closest("form.msg-editor");
  const at = form && messageAt(form);
  if (!at) return;
  event.preventDefault();
  const { room, message, node } = at;
  const text = form.querySelector("textarea").value;
  if (text === message.text) return stopEditing(node, message);
  if (!text.trim()) {
    view.showNotice("A message cannot be empty; use Delete to remove it.");
    return;
  }
  form.querySelector("button[type=submit]").disabled = true;
  try {
    await conn.edit(room.name, message.seq, text);
    // The `edited` frame may come before or after the ack; either way show the new text.
    const current = room.find(message.seq) ?? message;
    const shownNode = document.querySelector(`li.msg[data-seq="${message.seq}"] .msg-editor`)
      ?.closest("li.msg") ?? node;
    stopEditing(shownNode, current);
  } catch (error) {
    view.showNotice(error.message);
    form.querySelector("button[type=submit]").disabled = false;
  }
}

function onEditKey(event) {
  const form = event.target.closest("form.msg-editor");
  if (!form) return;
  if (event.key === "Escape") {
    const at = messageAt(form);
    if (at) stopEditing(at.node, at.message);
  } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
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
  on("event", onRoomEvent);
  on("resynced", onResynced);
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
  const room = state.rooms.get(message.room);
  if (state.openRoom === message.room) pendingRender.push(message);
  if (state.isUnread(room, message)) roomListDirty = true; // its count and the title
  if (message.thread != null) {
    const root = room.find(message.thread);
    if (root) changedMessages.add(root); // its reply count
    if (thread?.room === message.room && thread.root === message.thread) threadDirty = true;
  }
  scheduleRender();
}

/** An edit, deletion or reaction: the message it changed is redrawn with the next frame. */
function onRoomEvent(frame) {
  const changed = state.applyEvent(frame);
  if (!changed) return;
  changedMessages.add(changed.message);
  if (frame.op === "deleted") roomListDirty = true; // it may have been unread
  scheduleRender();
}

/** A resume was truncated: edits of messages held from before it may be missing. The room
 * is read afresh (its counts too); the open one reloads its history now. */
function onResynced({ room: name }) {
  const room = state.rooms.get(name);
  if (!room) return;
  state.forgetMessages(room);
  if (thread?.room === name) closeThread();
  if (state.openRoom === name) {
    renderRoom(room);
    loadOlder(room); // the newest page, as none is held
  }
  refreshRooms();
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
    markReadIfSeen(room);
  }
  const changed = changedMessages;
  changedMessages = new Set();
  for (const message of changed) view.updateMessage(message);
  if (threadDirty) {
    threadDirty = false;
    renderThread();
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

/**
 * Add or remove our `emoji` on a message. History lists a reaction's first 20 users, so
 * past them whether one is ours is unknown and its chip shows as not ours: an add that the
 * server answers `changed: false` says it was, and the chip shows it from then on.
 */
async function react(room, message, emoji, remove) {
  const ack = await conn.react(room.name, message.seq, emoji, remove);
  if (remove || ack.changed !== false) return;
  const changed = state.noteOwnReaction(room.name, message.seq, emoji);
  if (!changed) return;
  changedMessages.add(changed.message);
  scheduleRender();
}

const FRAME_HANDLERS = {
  file_updated(frame) {
    const changed = state.applyFileUpdate(frame);
    if (!changed) return;
    changedMessages.add(changed.message);
    scheduleRender();
  },
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
  room_added(frame) {
    // A room made visible to us just now (a DM opened with us, a room we were added to, a
    // new public room): listed at once, and joined when we are a member, from its seq then.
    if (typeof frame.room?.name !== "string") return;
    const room = state.upsertRoom(frame.room);
    if (room.member && !conn.isJoined(room.name)) {
      joinRoom(room.name, { after: Number(frame.room.seq) || 0 }).catch(() => {});
    }
    roomListDirty = true;
    scheduleRender();
  },
  read(frame) {
    // The user read the room on another device.
    const room = state.rooms.get(frame.room);
    if (!room || !state.markRead(room, frame.seq)) return;
    roomListDirty = true;
    scheduleRender();
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
  $("composer-file").addEventListener("change", onFileChosen);
  $("thread-file").addEventListener("change", onFileChosen);
  $("thread-composer").addEventListener("submit", onThreadSend);
  $("thread-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("thread-composer").requestSubmit();
    }
  });
  $("thread-close").addEventListener("click", closeThread);
  $("thread-older").addEventListener("click", () => {
    const room = thread && state?.rooms.get(thread.room);
    const replies = room?.threads.get(thread.root);
    if (replies) loadThreadPage(room, replies.oldest);
  });
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
  for (const list of [$("message-list"), $("thread-root"), $("thread-list")]) {
    list.addEventListener("click", (event) => {
      // Links in messages open in a new tab, so the chat stays where it is.
      const link = event.target.closest(".msg-body a[href]");
      if (link) {
        event.preventDefault();
        window.open(link.href, "_blank", "noopener,noreferrer");
        return;
      }
      onMessageAction(event);
    });
    list.addEventListener("submit", onEditSubmit);
    list.addEventListener("keydown", onEditKey);
  }
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (document.querySelector(".reaction-picker")) view.closeReactionPicker();
    else if (thread && $("thread-panel").contains(document.activeElement)
      && !event.target.closest("form.msg-editor")) closeThread();
  });
  // Reaching the newest message, or coming back to the page, reads the open room.
  const readOpenRoom = () => markReadIfSeen(state?.rooms.get(state.openRoom));
  $("message-scroller").addEventListener("scroll", readOpenRoom, { passive: true });
  document.addEventListener("visibilitychange", readOpenRoom);
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
