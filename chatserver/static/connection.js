// The WebSocket connection: connect, reconnect with backoff, and resume every joined room
// without a gap (PROTOCOL sections 1, 3 and 5). No DOM here: the app listens to events.
//
// Events (ChatConnection is an EventTarget; each event's `detail` is the frame or a summary):
//   "state"        {state, retryInMs?}   state: "connecting" | "connected" | "reconnecting" | "stopped"
//   "hello"        the hello frame (a new socket; rooms are being re-joined)
//   "joined"       the joined frame
//   "message"      a message frame, once per seq per connection lifetime of the room cursor
//   "event"        an edited, deleted or reaction frame: like messages, once per seq, in order
//   "resynced"     {room}: a resume was truncated; messages held from before it may be stale
//   "frame"        any other server frame without a pending request (typing, presence, read,
//                  stream_*, error)
//   "unauthorized" the session is gone (logged out elsewhere, revoked): reconnecting stops

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 30_000;
// Close codes where the server asked us to come back later (1001 going away, 1013 try again):
// wait a random 0.5-5 s (docs/protocol.md, "Daemon life"), so a restarted server's clients
// do not all return in the same instant.
export const SERVER_ASKED_CODES = new Set([1001, 1013]);
export const SERVER_ASKED_MIN_MS = 500;
export const SERVER_ASKED_MAX_MS = 5_000;
// The browser reports its network back: retry within this (jittered) instead of the backoff.
export const BACK_ONLINE_MAX_MS = 500;
// A socket must stay up this long before the backoff starts again from the base.
export const STABLE_AFTER_MS = 10_000;
// Application-level liveness: a ping every interval, and the socket is abandoned when its
// pong has not arrived within the timeout (a dead network may not close a socket for minutes).
export const PING_INTERVAL_MS = 25_000;
export const PONG_TIMEOUT_MS = 10_000;
export const HISTORY_PAGE = 200;
const CLIENT_ABANDON_CODE = 4000;
// Frames that take a room's seq (docs/protocol.md §10, "Room events"): all of them move the
// resume cursor, or a resume would replay edits and reactions already applied.
const ROOM_LOG_OPS = new Set(["message", "edited", "deleted", "reaction"]);

/** Full-jitter exponential backoff; at least 0.5-5 s (jittered) when the server asked for it. */
export function backoffDelay(attempt, closeCode, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  const delay = random() * ceiling;
  if (!SERVER_ASKED_CODES.has(closeCode)) return delay;
  const floor = SERVER_ASKED_MIN_MS + random() * (SERVER_ASKED_MAX_MS - SERVER_ASKED_MIN_MS);
  return Math.max(delay, floor);
}

/** `ws:` or `wss:` URL of `/ws` on the page's own host. */
export function socketUrl(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** A failed request: the server's `error` frame, or the connection going away under it. */
export class RequestError extends Error {
  constructor(code, message, frame = null) {
    super(message);
    this.code = code;
    this.frame = frame;
  }
}

/** Per-room resume cursor. `seq` is the highest seq up to which nothing is missing. */
class RoomCursor {
  constructor() {
    this.seq = null;         // null until the first `joined` (or the first join's `after`)
    this.joined = false;     // a `joined` arrived once: later joins resolve at once
    this.catchUpTo = null;   // set while paging with `history after=` after a truncated join
    this.liveMax = 0;        // highest live seq seen while catching up
    this.waiters = [];       // [resolve, reject] of join() calls waiting for `joined`
  }
}

export class ChatConnection extends EventTarget {
  /**
   * @param {object} options
   * @param {() => Promise<boolean|null>} options.checkAuth  false when the session is gone
   * @param {string} [options.url]
   */
  constructor({ checkAuth, url = socketUrl() } = {}) {
    super();
    this.url = url;
    this.checkAuth = checkAuth ?? (async () => null);
    this.state = "stopped";
    this.hello = null;
    this.rooms = new Map();   // room name -> RoomCursor
    this.pending = new Map(); // ref -> {resolve, reject, frame}
    this.socket = null;
    this.attempt = 0;
    this.refs = 0;
    this.timers = { retry: null, stable: null, ping: null, pong: null };
    this.backOnline = false; // the network returned while no retry was scheduled yet
    this.onBrowserOnline = () => this.retryNow();
  }

  // -- lifecycle ---------------------------------------------------------------------------

  start() {
    if (this.state !== "stopped") return;
    window.addEventListener("online", this.onBrowserOnline);
    this.open("connecting");
  }

  /** Close for good (log out): no reconnect; pending requests fail. */
  stop() {
    window.removeEventListener("online", this.onBrowserOnline);
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      this.detach(socket);
      socket.close(1000, "client closed");
    }
    this.failPending("the connection was closed");
    for (const cursor of this.rooms.values()) {
      for (const [, reject] of cursor.waiters.splice(0)) {
        reject(new RequestError("connection_lost", "the connection was closed"));
      }
    }
    this.rooms.clear();
    this.setState("stopped");
  }

  /** The network is back: retry soon rather than after a backoff grown while it was down. */
  retryNow() {
    if (this.state !== "reconnecting") return;
    if (this.timers.retry === null) {
      // Between a close and its scheduled retry (the session check is in flight).
      this.backOnline = true;
      return;
    }
    clearTimeout(this.timers.retry);
    this.timers.retry = null;
    this.backOnline = true;
    this.scheduleReconnect(null);
  }

  open(state) {
    this.setState(state);
    this.hello = null;
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.scheduleReconnect(null);
      return;
    }
    this.socket = socket;
    socket.onmessage = (event) => this.onFrameText(event.data);
    socket.onclose = (event) => this.onSocketClosed(socket, event.code);
    socket.onerror = () => {}; // a close event always follows
  }

  detach(socket) {
    socket.onmessage = socket.onclose = socket.onerror = null;
  }

  /** Give up on a socket now (no pong): do not wait for a close handshake that may never end. */
  abandon(reason) {
    const socket = this.socket;
    if (!socket) return;
    this.detach(socket);
    try {
      socket.close(CLIENT_ABANDON_CODE, reason);
    } catch {
      // already closing
    }
    this.onSocketClosed(socket, CLIENT_ABANDON_CODE);
  }

  async onSocketClosed(socket, code) {
    if (socket !== this.socket) return;
    this.socket = null;
    const hadHello = this.hello !== null;
    this.clearTimers();
    this.failPending("the connection was lost before the server answered");
    this.setState("reconnecting");
    // 1008: credentials revoked. No hello: the upgrade itself was refused (401/403) or the
    // server is unreachable; only the HTTP API can tell which.
    if (code === 1008 || !hadHello) {
      const ok = await this.checkAuth().catch(() => null);
      if (this.state !== "reconnecting") return; // stopped meanwhile
      if (ok === false) {
        this.stop();
        this.dispatch("unauthorized", { code });
        return;
      }
    }
    this.scheduleReconnect(code);
  }

  scheduleReconnect(code) {
    let delay = backoffDelay(this.attempt, code);
    if (this.backOnline) delay = Math.min(delay, Math.random() * BACK_ONLINE_MAX_MS);
    this.backOnline = false;
    this.attempt += 1;
    this.setState("reconnecting", { retryInMs: delay });
    this.timers.retry = setTimeout(() => {
      this.timers.retry = null;
      this.open("reconnecting");
    }, delay);
  }

  clearTimers() {
    for (const [name, timer] of Object.entries(this.timers)) {
      if (timer !== null) {
        clearTimeout(timer);
        clearInterval(timer);
        this.timers[name] = null;
      }
    }
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatch("state", { state, ...extra });
  }

  dispatch(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  get connected() {
    return this.state === "connected";
  }

  // -- frames in ---------------------------------------------------------------------------

  onFrameText(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame.op !== "string") return;
    if (ROOM_LOG_OPS.has(frame.op)) return this.onRoomEvent(frame);
    switch (frame.op) {
      case "hello":
        return this.onHello(frame);
      case "joined":
        return this.onJoined(frame);
      default:
        if (this.settle(frame)) return;
        this.dispatch("frame", frame);
    }
  }

  onHello(frame) {
    this.hello = frame;
    this.backOnline = false;
    this.setState("connected");
    this.timers.stable = setTimeout(() => {
      this.timers.stable = null;
      this.attempt = 0;
    }, STABLE_AFTER_MS);
    this.timers.ping = setInterval(() => this.ping(), PING_INTERVAL_MS);
    this.dispatch("hello", frame);
    for (const [room, cursor] of this.rooms) this.sendJoin(room, cursor);
  }

  /** Answer the request that carries this frame's ref; true when there was one. */
  settle(frame) {
    const waiting = frame.ref != null ? this.pending.get(frame.ref) : undefined;
    if (!waiting) return false;
    this.pending.delete(frame.ref);
    if (frame.op === "error") {
      waiting.reject(new RequestError(frame.code, frame.message, frame));
    } else {
      waiting.resolve(frame);
    }
    return true;
  }

  /** A frame of the room's log (a message or an event on one), once per seq, in order. */
  onRoomEvent(frame) {
    const cursor = this.rooms.get(frame.room);
    if (!cursor) return; // left meanwhile
    if (cursor.catchUpTo !== null) {
      // Live while paging a truncated gap: deliver now, advance the cursor when caught up.
      cursor.liveMax = Math.max(cursor.liveMax, frame.seq);
    } else if (cursor.seq !== null && frame.seq <= cursor.seq) {
      return; // already seen
    } else {
      cursor.seq = frame.seq;
    }
    this.dispatch(frame.op === "message" ? "message" : "event", frame);
  }

  onJoined(frame) {
    this.settle(frame);
    const cursor = this.rooms.get(frame.room);
    if (!cursor) return;
    if (frame.truncated) {
      cursor.catchUpTo = frame.seq;
      cursor.liveMax = 0;
      // History pages carry messages in their current state, but not the edits, deletions
      // and reactions of older messages that fell in the gap: whoever holds those re-reads.
      this.dispatch("resynced", { room: frame.room });
      this.catchUp(frame.room, cursor);
    } else {
      cursor.seq = Math.max(cursor.seq ?? 0, frame.seq);
    }
    cursor.joined = true;
    for (const [resolve] of cursor.waiters.splice(0)) resolve(frame);
    this.dispatch("joined", frame);
  }

  /** After a truncated replay: page `history after=` until the join's seq is reached. */
  async catchUp(room, cursor) {
    try {
      while (cursor.seq === null || cursor.seq < cursor.catchUpTo) {
        const page = await this.request({
          op: "history", room, after: cursor.seq ?? 0, limit: HISTORY_PAGE,
        });
        if (this.rooms.get(room) !== cursor) return;
        for (const message of page.messages) {
          if (message.seq > cursor.catchUpTo) break; // already delivered live
          if (cursor.seq !== null && message.seq <= cursor.seq) continue;
          cursor.seq = message.seq;
          this.dispatch("message", message);
        }
        if (!page.more || page.messages.length === 0) break;
      }
      cursor.seq = Math.max(cursor.seq ?? 0, cursor.catchUpTo, cursor.liveMax);
      cursor.catchUpTo = null;
    } catch (error) {
      // The connection dropped: the next `join after=<cursor.seq>` resumes from here.
      if (error.code !== "connection_lost" && this.rooms.get(room) === cursor) {
        this.dispatch("frame", error.frame ?? {
          op: "error", code: error.code, message: error.message,
        });
      }
    }
  }

  // -- frames out --------------------------------------------------------------------------

  nextRef() {
    this.refs += 1;
    return `c${this.refs}`;
  }

  /** Send a frame with a fresh ref; resolve with the reply, reject with a RequestError. */
  request(frame) {
    if (!this.connected) {
      return Promise.reject(new RequestError("connection_lost", "not connected"));
    }
    const ref = this.nextRef();
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject });
      this.transmit({ ...frame, ref });
    });
  }

  transmit(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  failPending(why) {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const { reject } of pending) reject(new RequestError("connection_lost", why));
  }

  /**
   * Join a room and keep it joined across reconnects; resolves with the `joined` frame. A
   * first join with `after` replays what came after that seq (messages and events), as a
   * resume does.
   */
  join(room, { after = null } = {}) {
    let cursor = this.rooms.get(room);
    if (cursor?.joined) {
      // Joined before: the subscription (or its resume after a reconnect) is already there.
      return Promise.resolve({ op: "joined", room, seq: cursor.seq });
    }
    const isNew = !cursor;
    if (isNew) {
      cursor = new RoomCursor();
      cursor.seq = after;
      this.rooms.set(room, cursor);
    }
    const joined = new Promise((resolve, reject) => cursor.waiters.push([resolve, reject]));
    if (isNew && this.connected) this.sendJoin(room, cursor);
    return joined;
  }

  sendJoin(room, cursor) {
    const frame = { op: "join", room };
    if (cursor.seq !== null) frame.after = cursor.seq;
    cursor.catchUpTo = null; // a fresh join replays from cursor.seq itself
    this.request(frame).catch((error) => {
      if (error.code === "connection_lost") return; // re-sent on the next hello
      // Forbidden, not found...: stop tracking the room and tell whoever waits.
      if (this.rooms.get(room) === cursor) this.rooms.delete(room);
      const waiters = cursor.waiters.splice(0);
      for (const [, reject] of waiters) reject(error);
      // Nobody waiting (a re-join after reconnecting): report it like any other error frame.
      if (waiters.length === 0) this.dispatch("frame", { ...error.frame, room });
    });
  }

  leave(room) {
    const cursor = this.rooms.get(room);
    if (!cursor) return;
    this.rooms.delete(room);
    for (const [, reject] of cursor.waiters.splice(0)) {
      reject(new RequestError("left", `left ${room}`));
    }
    if (this.connected) this.transmit({ op: "leave", room });
  }

  isJoined(room) {
    return this.rooms.has(room);
  }

  /** Post a message; `thread` (a root's seq) makes it a reply. Resolves with the ack. */
  send(room, text, thread = null) {
    const frame = { op: "send", room, text };
    if (thread != null) frame.thread = thread;
    return this.request(frame);
  }

  edit(room, seq, text) {
    return this.request({ op: "edit", room, seq, text });
  }

  deleteMessage(room, seq) {
    return this.request({ op: "delete", room, seq });
  }

  react(room, seq, emoji, remove = false) {
    return this.request({ op: "react", room, seq, emoji, remove });
  }

  /** The user has read `room` up to `seq`; resolves with the position now. */
  read(room, seq) {
    return this.request({ op: "read", room, seq });
  }

  typing(room) {
    if (this.connected && this.rooms.has(room)) this.transmit({ op: "typing", room });
  }

  ping() {
    if (!this.connected || this.timers.pong !== null) return;
    this.timers.pong = setTimeout(() => {
      this.timers.pong = null;
      this.abandon("no pong");
    }, PONG_TIMEOUT_MS);
    this.request({ op: "ping" }).then(
      () => {
        clearTimeout(this.timers.pong);
        this.timers.pong = null;
      },
      () => {},
    );
  }
}
