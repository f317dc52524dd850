// What the UI knows: rooms, their messages in seq order, unread counts, typing, presence and
// streams in progress. Plain data, no DOM and no I/O.

export const TYPING_SHOW_MS = 3_000;
// Rooms in the background keep at most this many messages; older ones are paged in on demand.
export const MAX_BACKGROUND_MESSAGES = 500;

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
    this.unread = 0;
    this.readSeq = 0;
    this.streams = new Map(); // stream id -> {id, user, text}
    this.typing = new Map();  // user -> time (ms) until which "is typing" shows
    this.update(listing);
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

  /** Record a message; returns its index in the room, or -1 (unknown room or duplicate). */
  addMessage(message) {
    const room = this.rooms.get(message.room);
    if (!room) return -1;
    const index = room.messages.add(message);
    if (index < 0) return -1;
    room.typing.delete(message.user);
    if (message.stream) room.streams.delete(message.stream);
    if (this.openRoom === room.name) {
      room.readSeq = Math.max(room.readSeq, message.seq);
    } else {
      if (message.seq > room.readSeq && message.user !== this.me.name) room.unread += 1;
      if (room.messages.trim(MAX_BACKGROUND_MESSAGES) > 0) room.hasOlder = true;
    }
    return index;
  }

  /** A page of history (older or newer); returns how many were new. */
  addHistory(roomName, page) {
    const room = this.rooms.get(roomName);
    if (!room) return 0;
    let added = 0;
    for (const message of page.messages) if (room.messages.add(message) >= 0) added += 1;
    return added;
  }

  open(name) {
    this.openRoom = name;
    const room = this.rooms.get(name);
    if (!room) return null;
    room.unread = 0;
    room.readSeq = Math.max(room.readSeq, room.messages.newest ?? 0);
    return room;
  }

  totalUnread() {
    let total = 0;
    for (const room of this.rooms.values()) total += room.unread;
    return total;
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
    const stream = { id: frame.stream, user: frame.user, text: frame.text ?? "" };
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
