// What the UI knows: rooms, their messages in seq order with the edits, deletions, reactions
// and thread replies applied, unread and mention counts, typing, presence and streams in
// progress. Plain data, no DOM and no I/O.

export const TYPING_SHOW_MS = 3_000;
// Rooms in the background keep at most this many messages; older ones are paged in on demand.
export const MAX_BACKGROUND_MESSAGES = 500;
// History lists at most this many of a reaction's users (docs/protocol.md §10, "Reactions").
export const REACTION_USERS_LISTED = 20;
// Events on messages not held yet, kept while the room's history is loading (bounded).
const MAX_PENDING_EVENTS = 1_000;

/** Whether a message mentions `name`, by name or with @room. */
export function mentions(message, name) {
  return Boolean(message.mentions_room) || (message.mentions ?? []).includes(name);
}

/**
 * Add or remove `user`'s `emoji` on a message. Idempotent per user, so an event that a
 * history page already folded in changes nothing. Past REACTION_USERS_LISTED users the list
 * is partial: a removal by someone not listed is taken as one of the unlisted. `listAlways`:
 * list the user even past that (the page's own user, so that its reactions stay known).
 */
export function applyReaction(message, emoji, user, added, { listAlways = false } = {}) {
  const list = message.reactions ?? [];
  let entry = list.find((reaction) => reaction.emoji === emoji);
  if (added) {
    if (entry?.users.includes(user)) return;
    if (!entry) list.push((entry = { emoji, count: 0, users: [] }));
    entry.count += 1;
    if (listAlways || entry.users.length < REACTION_USERS_LISTED) entry.users.push(user);
  } else {
    if (!entry) return;
    const at = entry.users.indexOf(user);
    if (at >= 0) entry.users.splice(at, 1);
    else if (entry.users.length >= entry.count) return; // every user is listed: not theirs
    entry.count -= 1;
    if (entry.count <= 0) list.splice(list.indexOf(entry), 1);
  }
  if (list.length > 0) message.reactions = list;
  else delete message.reactions;
}

/** A room's messages keyed by seq, kept sorted; adding a seq twice is a no-op. */
export class RoomMessages {
  constructor() {
    this.seqs = [];
    this.bySeq = new Map();
  }

  get size() {
    return this.seqs.length;
  }

  get oldest() {
    return this.seqs.length ? this.seqs[0] : null;
  }

  get newest() {
    return this.seqs.length ? this.seqs[this.seqs.length - 1] : null;
  }

  /** Insert; returns the new message's index, or -1 when that seq is already held. */
  add(message) {
    if (this.bySeq.has(message.seq)) return -1;
    this.bySeq.set(message.seq, message);
    const index = this.insertionIndex(message.seq);
    this.seqs.splice(index, 0, message.seq);
    return index;
  }

  insertionIndex(seq) {
    let low = 0;
    let high = this.seqs.length;
    if (high === 0 || this.seqs[high - 1] < seq) return high; // the common case: newest
    while (low < high) {
      const mid = (low + high) >> 1;
      if (this.seqs[mid] < seq) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  /** The message right after index, or null. */
  after(index) {
    const seq = this.seqs[index + 1];
    return seq === undefined ? null : this.bySeq.get(seq);
  }

  /** Drop the oldest messages beyond `keep`; returns how many were dropped. */
  trim(keep) {
    const drop = this.seqs.length - keep;
    if (drop <= 0) return 0;
    for (const seq of this.seqs.splice(0, drop)) this.bySeq.delete(seq);
    return drop;
  }

  *[Symbol.iterator]() {
    for (const seq of this.seqs) yield this.bySeq.get(seq);
  }
}

export class RoomState {
  constructor(listing) {
    this.name = listing.name;
    this.messages = new RoomMessages();
    this.historyLoaded = false; // the first page was fetched when the room was first opened
    this.hasOlder = true;
    this.loading = false;
    // Unread: the server counted others' messages after readSeq up to countedSeq (GET
    // /api/rooms); the ones above countedSeq are counted here as they arrive.
    this.readSeq = 0;
    this.readSent = 0;         // the position last sent to the server in a `read`
    this.readWhenOpened = null; // readSeq when the room was last opened (the "New" line)
    this.countedSeq = 0;
    this.serverUnread = 0;
    this.serverMentions = 0;
    this.capped = false;       // the server stopped counting (show "999+")
    this.localUnread = 0;
    this.localMentions = 0;
    this.threads = new Map();  // root seq -> RoomMessages of its replies (threads opened)
    this.pendingEvents = [];   // events on messages not held yet, while history loads
    this.streams = new Map(); // stream id -> {id, user, text}
    this.typing = new Map();  // user -> time (ms) until which "is typing" shows
    this.update(listing);
  }

  get unread() {
    return this.serverUnread + this.localUnread;
  }

  get mentions() {
    return this.serverMentions + this.localMentions;
  }

  /** A held message (main timeline or an opened thread), or undefined. */
  find(seq) {
    const message = this.messages.bySeq.get(seq);
    if (message) return message;
    for (const replies of this.threads.values()) {
      const reply = replies.bySeq.get(seq);
      if (reply) return reply;
    }
    return undefined;
  }

  update(listing) {
    this.kind = listing.kind ?? "public";
    this.private = Boolean(listing.private);
    this.member = Boolean(listing.member);
    this.members = listing.members ?? this.members ?? [];
  }
}

export class ChatState {
  constructor(me) {
    this.me = me;               // {name, admin, bot}
    this.rooms = new Map();     // name -> RoomState
    this.openRoom = null;       // name of the room on screen
    this.presence = new Map();  // user -> "online" | "offline"
    // A room's presence snapshot races the change frames: a change that arrives after the
    // snapshot was asked for is at least as new as it, so the snapshot must not undo it.
    this.presenceClock = 0;            // counts change frames and resets
    this.presenceChanged = new Map();  // user -> clock of their last change frame
    this.presenceReset = 0;            // clock of the last reset (a new socket)
  }

  /** A presence change frame (or my own hello). */
  setPresence(user, status) {
    this.presenceClock += 1;
    this.presenceChanged.set(user, this.presenceClock);
    this.presence.set(user, status);
  }

  /** A new socket: whatever changed while we were away is unknown; snapshots asked for
   * before now are stale. */
  resetPresence() {
    this.presenceClock += 1;
    this.presenceReset = this.presenceClock;
    this.presence.clear();
    this.presenceChanged.clear();
  }

  /** Taken before asking for a snapshot; hand it to `seedPresence` with the answer. */
  presenceMark() {
    return this.presenceClock;
  }

  /**
   * A snapshot asked for at `mark`: `online` users are online and `offline` ones offline,
   * except users whose change frames arrived since (newer). Returns false, changing nothing,
   * when the socket was replaced since the mark (the snapshot is then asked for again).
   */
  seedPresence(mark, online, offline = []) {
    if (mark < this.presenceReset) return false;
    const seed = (user, status) => {
      if ((this.presenceChanged.get(user) ?? 0) <= mark) this.presence.set(user, status);
    };
    for (const user of online) seed(user, "online");
    for (const user of offline) seed(user, "offline");
    return true;
  }

  upsertRoom(listing) {
    let room = this.rooms.get(listing.name);
    if (room) room.update(listing);
    else this.rooms.set(listing.name, (room = new RoomState(listing)));
    this.applyCounts(room, listing);
    return room;
  }

  /** Rooms for the list: public, private, then direct; by name within each. */
  sortedRooms() {
    const order = { public: 0, private: 1, direct: 2 };
    return [...this.rooms.values()].sort(
      (a, b) => (order[a.kind] ?? 3) - (order[b.kind] ?? 3) || a.name.localeCompare(b.name),
    );
  }

  /** Direct rooms are named after the other member; the rest by their own name. */
  label(room) {
    if (room.kind !== "direct") return `#${room.name}`;
    const others = room.members.filter((name) => name !== this.me.name);
    return `@${(others.length ? others : room.members).join(", ")}`;
  }

  /** The other member of a direct room (for its presence dot), or null. */
  peer(room) {
    if (room.kind !== "direct") return null;
    return room.members.find((name) => name !== this.me.name) ?? null;
  }

  /** A listing from GET /api/rooms: the server's read position and counts. */
  applyCounts(room, listing) {
    if (typeof listing.unread !== "number") return; // create and direct answers have none
    const serverRead = listing.read_seq ?? 0;
    room.countedSeq = listing.seq ?? 0;
    if (serverRead >= room.readSeq || room.readSeq < room.countedSeq) {
      // (A `read` of ours the listing has not seen yet, below countedSeq, leaves the counts
      // high until the next listing.)
      room.serverUnread = listing.unread;
      room.serverMentions = listing.mentions ?? 0;
      room.capped = Boolean(listing.unread_capped);
    } else {
      room.serverUnread = room.serverMentions = 0;
      room.capped = false;
    }
    room.readSeq = Math.max(room.readSeq, serverRead);
    this.recountLocal(room);
  }

  /** Whether a message of `room` is unread for me. */
  isUnread(room, message) {
    return message.seq > room.readSeq && message.user !== this.me.name && !message.deleted;
  }

  recountLocal(room) {
    room.localUnread = room.localMentions = 0;
    if ((room.messages.newest ?? 0) <= Math.max(room.readSeq, room.countedSeq)) return;
    for (const message of room.messages) {
      if (message.seq > room.countedSeq) this.countUnread(room, message, 1);
    }
  }

  countUnread(room, message, delta) {
    if (!this.isUnread(room, message)) return;
    room.localUnread += delta;
    if (mentions(message, this.me.name)) room.localMentions += delta;
  }

  /** I have read `room` up to `seq`; false when that is not further than before. */
  markRead(room, seq) {
    if (seq <= room.readSeq) return false;
    room.readSeq = seq;
    if (seq >= room.countedSeq) {
      room.serverUnread = room.serverMentions = 0;
      room.capped = false;
    }
    this.recountLocal(room);
    return true;
  }

  /** Record a message; returns its index in the room, or -1 (unknown room or duplicate). */
  addMessage(frame) {
    const room = this.rooms.get(frame.room);
    if (!room) return -1;
    // A reply an open thread's history brought first: one object, so events change both.
    const message = frame.thread != null ? room.threads.get(frame.thread)?.bySeq.get(frame.seq)
      ?? frame : frame;
    const index = room.messages.add(message);
    if (index < 0) return -1;
    room.typing.delete(message.user);
    if (message.stream) room.streams.delete(message.stream);
    if (message.thread != null) this.noteReply(room, message);
    if (message.seq > room.countedSeq) this.countUnread(room, message, 1);
    if (this.openRoom !== room.name && room.messages.trim(MAX_BACKGROUND_MESSAGES) > 0) {
      room.hasOlder = true;
    }
    return index;
  }

  /**
   * A reply: into its thread when that is open, and counted on its root. History gives a
   * root with its count so far, `last_reply` included: replies up to that are not new.
   */
  noteReply(room, reply) {
    room.threads.get(reply.thread)?.add(reply);
    const root = room.find(reply.thread);
    if (!root || reply.seq <= (root.last_reply ?? 0)) return null;
    root.replies = (root.replies ?? 0) + 1;
    root.last_reply = reply.seq;
    return root;
  }

  /** A page of history (older or newer); returns how many were new. */
  addHistory(roomName, page) {
    const room = this.rooms.get(roomName);
    if (!room) return 0;
    let added = 0;
    for (const message of page.messages) {
      if (room.messages.add(message) < 0) continue;
      added += 1;
      if (message.thread != null) this.noteReply(room, message);
    }
    return added;
  }

  /** A truncated resume: what is held may miss events; the room is read afresh. */
  forgetMessages(room) {
    room.messages = new RoomMessages();
    room.threads.clear();
    room.historyLoaded = false;
    room.hasOlder = true;
    room.pendingEvents = [];
  }

  /** Start holding a thread's replies (before its history is fetched: live ones join it). */
  openThread(room, root) {
    let replies = room.threads.get(root);
    if (!replies) room.threads.set(root, (replies = new RoomMessages()));
    return replies;
  }

  /** A page of a thread's replies; a reply also held by the room is the same object. */
  addThreadPage(room, root, page) {
    const replies = this.openThread(room, root);
    for (const reply of page.messages) replies.add(room.messages.bySeq.get(reply.seq) ?? reply);
    return replies;
  }

  /**
   * An `edited`, `deleted` or `reaction` frame: applied to the message it targets, which is
   * returned with its room; null when the message is not held (an event for a message not
   * loaded yet waits while the room's history is loading, as it may be older than the page).
   */
  applyEvent(frame) {
    const room = this.rooms.get(frame.room);
    if (!room) return null;
    const message = room.find(frame.target);
    if (!message) {
      if (room.loading) {
        room.pendingEvents.push(frame);
        if (room.pendingEvents.length > MAX_PENDING_EVENTS) room.pendingEvents.shift();
      }
      return null;
    }
    if (frame.op === "edited") {
      message.text = frame.text;
      message.html = frame.html;
      message.edited = frame.edited;
    } else if (frame.op === "deleted") {
      this.uncount(room, message);
      message.deleted = true;
      message.text = message.html = "";
      for (const field of ["reactions", "file", "mentions", "mentions_room"]) delete message[field];
    } else if (frame.op === "reaction") {
      applyReaction(message, frame.emoji, frame.user, frame.added,
        { listAlways: frame.user === this.me.name });
    }
    return { room, message };
  }

  /**
   * A `file_updated` frame (a thumbnail made after the message was posted): the message held
   * gets the file as it is now; null when it is not held (history will have it) or deleted.
   */
  applyFileUpdate(frame) {
    const room = this.rooms.get(frame.room);
    const message = room?.find(frame.target);
    if (!message || message.deleted || message.file?.id !== frame.file?.id) return null;
    message.file = frame.file;
    return { room, message };
  }

  /**
   * The server said `emoji` on message `seq` is already ours (an add that changed nothing):
   * one of the users its history did not list. Listed from now on; null if nothing changed.
   */
  noteOwnReaction(roomName, seq, emoji) {
    const room = this.rooms.get(roomName);
    const message = room?.find(seq);
    const entry = message?.reactions?.find((reaction) => reaction.emoji === emoji);
    if (!entry || entry.users.includes(this.me.name)) return null;
    entry.users.push(this.me.name);
    return { room, message };
  }

  /** A message counted unread is deleted: it no longer counts. */
  uncount(room, message) {
    if (message.deleted || !this.isUnread(room, message)) return;
    if (message.seq > room.countedSeq) {
      this.countUnread(room, message, -1);
    } else {
      room.serverUnread = Math.max(0, room.serverUnread - 1);
      if (mentions(message, this.me.name)) {
        room.serverMentions = Math.max(0, room.serverMentions - 1);
      }
    }
  }

  /** Apply the events that waited for the room's history; the messages they changed. */
  flushPendingEvents(room) {
    const events = room.pendingEvents;
    room.pendingEvents = [];
    return events.map((frame) => this.applyEvent(frame)).filter(Boolean);
  }

  /** Show a room; its "New messages" line goes above what was unread as it opened. */
  open(name) {
    this.openRoom = name;
    const room = this.rooms.get(name) ?? null;
    if (room) room.readWhenOpened = room.readSeq;
    return room;
  }

  /** The first message of the open room's timeline that was unread when it was opened (the
   * "New messages" line goes above it), or null. */
  firstUnread(room) {
    if (room.readWhenOpened == null) return null;
    for (const message of room.messages) {
      if (message.thread == null && message.seq > room.readWhenOpened
        && message.user !== this.me.name && !message.deleted) return message.seq;
    }
    return null;
  }

  totalUnread() {
    let total = 0;
    for (const room of this.rooms.values()) total += room.unread;
    return total;
  }

  /** Whether I may edit or delete a message: my own, or any as an admin. */
  mayChange(message) {
    return !message.deleted && (message.user === this.me.name || Boolean(this.me.admin));
  }

  /** Who is typing in a room now (not counting me); drops expired entries. */
  typingIn(room, now = Date.now()) {
    const names = [];
    for (const [user, until] of room.typing) {
      if (until <= now) room.typing.delete(user);
      else if (user !== this.me.name) names.push(user);
    }
    return names.sort();
  }

  noteTyping(roomName, user, now = Date.now()) {
    const room = this.rooms.get(roomName);
    if (!room || user === this.me.name) return null;
    room.typing.set(user, now + TYPING_SHOW_MS);
    return room;
  }

  startStream(frame) {
    const room = this.rooms.get(frame.room);
    if (!room) return null;
    const stream = {
      id: frame.stream, user: frame.user, text: frame.text ?? "", thread: frame.thread ?? null,
    };
    room.streams.set(stream.id, stream);
    room.typing.delete(frame.user);
    return stream;
  }

  appendStream(frame) {
    const stream = this.rooms.get(frame.room)?.streams.get(frame.stream);
    if (stream) stream.text += frame.text ?? "";
    return stream ?? null;
  }

  endStream(frame) {
    this.rooms.get(frame.room)?.streams.delete(frame.stream);
  }

  /** A new socket: streams are re-announced by the server after each `joined`. */
  forgetStreams() {
    for (const room of this.rooms.values()) room.streams.clear();
  }
}
