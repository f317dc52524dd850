"""Room -> local subscriptions: encode once, enqueue everywhere, never wait on a recipient.

The hub is the broker's handler. A `message` event's frame was encoded once by whoever
published it; the hub wraps it in its WebSocket header once, and delivering it is one
`Outbox.enqueue_frame` of those same bytes per subscribed connection. Each
subscription remembers the last seq it delivered, so a connection's frames for a room are the
stored history, in order, with nothing missing, extra or doubled:

- while a join replays from the store, live events only raise `max_seen`; the join catches up
  from the store until it has reached everything seen, then goes live in one synchronous step
  (enqueue `joined`, mark live), so no live frame can slip in between;
- a live event whose seq skips ahead (the broker lost one) suspends the subscription and
  re-reads the gap from the store before going live again;
- an event at or below the last delivered seq is a duplicate and is dropped.

`rooms` events (chatserver.room_announce) are for users, not a room: they go to the users'
open connections (`Connections.of_user`), whatever those joined. A `logout` event closes the
connections its token authenticated (chatserver.credentials).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from chatserver import credentials, protocol, room_events, wsframe
from chatserver.broker.base import Broker, Event
from chatserver.outbox import Outbox
from chatserver.session import Connections
from chatserver.store.base import LogEntry, Room, Store

log = logging.getLogger(__name__)

CATCH_UP_PAGE = 500
RESYNC_MAX_WAITS = 100  # x 50 ms


@dataclass(eq=False, slots=True)
class Subscription:
    """One connection's membership in one room's live feed."""

    room: Room
    conn_id: str
    user: str
    outbox: Outbox
    live: bool = False
    last_seq: int = 0
    max_seen: int = 0
    resync: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class JoinResult:
    seq: int
    truncated: bool
    replayed: int


ActiveStreams = Callable[[str], list[bytes]]
StreamWatcher = Callable[[Event], None]


class Hub:
    def __init__(self, store: Store, broker: Broker, *, replay_max: int,
                 connections: Connections) -> None:
        self.store = store
        self.broker = broker
        self.replay_max = replay_max
        self.connections = connections  # for events to users rather than rooms
        self._rooms: dict[str, dict[str, Subscription]] = {}
        self._active_streams: ActiveStreams = lambda room: []
        self._watch_streams: StreamWatcher = lambda event: None
        # Rooms the broker is subscribed to, and subscribes in flight that later joiners of the
        # same room wait for (a joiner must not go live before events of the room can arrive).
        self._subscribed: set[str] = set()
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._room_resyncs: set[asyncio.Task[None]] = set()
        # Counters for /metrics, read at scrape time. Fan-out counts once per event: the
        # per-recipient loops only count in a local variable (or `live_messages`, one
        # increment per recipient as before).
        self.live_messages = 0  # `message` frames fan-out queued
        self.other_deliveries = 0  # stream, typing, presence, read, room_added frames queued
        self.resyncs = 0
        self.joins = 0  # joins that went live
        self.replayed = 0  # messages replayed to joins
        # Frames queued, by op; live `message` fan-out is `live_messages`.
        self.frames_out: defaultdict[str, int] = defaultdict(int)
        # Told once per message after its fan-out (received time, from another instance);
        # `Metrics.bind` points it at the flusher's delivery timing.
        self.fanned_out: Callable[[float, bool], None] | None = None
        broker.set_handler(self.deliver)
        broker.set_resync(self.resync_all)

    @property
    def deliveries(self) -> int:
        """Frames fan-out queued to connections: messages, stream events, typing, presence,
        read positions, room announcements."""
        return self.live_messages + self.other_deliveries

    def set_streams(self, provider: ActiveStreams, watcher: StreamWatcher) -> None:
        """Where a joiner going live gets the streams in progress (text so far), and who
        watches stream events to know them."""
        self._active_streams = provider
        self._watch_streams = watcher

    def subscribers(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    def is_joined(self, room: str, conn_id: str) -> bool:
        return conn_id in self._rooms.get(room, ())

    # -- delivery (the broker's handler; synchronous, never awaits) ------------------------

    def deliver(self, event: Event) -> None:
        if event.kind == "presence":
            self._deliver_presence(event)
            return
        if event.kind == "read":
            self._deliver_read(event)
            return
        subs = self._rooms.get(event.room)
        if not subs:
            # `rooms` and `logout` events have no room (""), so they always land here:
            # checked here, they cost the hot path (a room with subscribers) nothing.
            if event.kind == "rooms":
                self._deliver_to_users(event)
            elif event.kind == "logout":
                # On the instance that logged out they are closing already, and left alone.
                credentials.close_token(self.connections, event.key, credentials.LOGGED_OUT)
            return
        frame = wsframe.text_frame(event.frame)  # once, for every recipient
        if event.kind == "message":
            seq = event.seq
            before = self.live_messages
            count = 0
            for sub in subs.values():
                # The one line per recipient: a live subscription next in line takes the
                # frame; anything else (catching up, duplicate, gap) is `_offer`'s.
                if sub.live and seq == sub.last_seq + 1:
                    sub.last_seq = seq
                    sub.outbox.enqueue_frame(frame)
                    count += 1
                else:
                    self._offer(sub, seq, frame)
            self.live_messages += count
            if self.fanned_out is not None and self.live_messages != before:
                # A message from another instance is timed from its arrival here.
                received = event.received
                self.fanned_out(received or time.monotonic(), not received)
            if event.key:
                self._watch_streams(event)
            return
        if event.kind == "stream":
            self._watch_streams(event)
        key = event.key
        skip_user = event.user if event.kind == "typing" else None
        count = 0
        for sub in subs.values():
            if sub.live and sub.user != skip_user:
                outbox = sub.outbox
                if not key:
                    outbox.enqueue_frame(frame)
                elif event.kind == "stream":
                    outbox.enqueue_delta(frame, key)
                else:
                    outbox.enqueue_ephemeral(frame, key)
                count += 1
        self.other_deliveries += count
        self.frames_out[_op_of(event)] += count

    def _offer(self, sub: Subscription, seq: int, frame: bytes) -> None:
        if not sub.live:
            if seq > sub.max_seen:
                sub.max_seen = seq
            return
        if seq <= sub.last_seq:
            return  # already delivered (duplicate or replayed)
        if seq == sub.last_seq + 1:
            sub.outbox.enqueue_frame(frame)
            sub.last_seq = seq
            self.live_messages += 1
            return
        log.warning("room %s: seq %d after %d; re-reading the gap from the store",
                    sub.room.name, seq, sub.last_seq)
        sub.live = False
        sub.max_seen = seq
        self.resyncs += 1
        sub.resync = asyncio.get_running_loop().create_task(
            self._resync_room(sub.room.name, [sub]))

    def _deliver_presence(self, event: Event) -> None:
        """Once per connection that shares a room with the user. A crowd reconnecting is N
        presence events for N members each, so this loop is kept to the bare minimum."""
        frame = wsframe.text_frame(event.frame)
        key, user = event.key or f"p:{event.user}", event.user
        rooms = [subs for room in event.rooms if (subs := self._rooms.get(room))]
        seen: set[str] | None = set() if len(rooms) > 1 else None  # only needed for several
        count = 0
        for subs in rooms:
            for conn_id, sub in subs.items():
                if not sub.live or sub.user == user:
                    continue
                if seen is not None:
                    if conn_id in seen:
                        continue
                    seen.add(conn_id)
                sub.outbox.enqueue_ephemeral(frame, key)
                count += 1
        self.other_deliveries += count
        self.frames_out["presence"] += count

    def _deliver_read(self, event: Event) -> None:
        """A user's read position moved (chatserver.reads): to that user's own live
        subscriptions of the room, except the connection that moved it (`key`), which got the
        reply. Not a room event: no seq, not in the log, never to anyone else."""
        subs = self._rooms.get(event.room)
        if not subs:
            return
        frame = wsframe.text_frame(event.frame)
        count = 0
        for conn_id, sub in subs.items():
            if sub.live and sub.user == event.user and conn_id != event.key:
                sub.outbox.enqueue_frame(frame)
                count += 1
        self.other_deliveries += count
        self.frames_out["read"] += count

    def _deliver_to_users(self, event: Event) -> None:
        """A `rooms` event (a room announced, chatserver.room_announce): to every open
        connection of `event.users`, or with none named, of every user but `event.user`.
        Never shed: it goes through each outbox like a message."""
        frame = wsframe.text_frame(event.frame)
        connections = self.connections
        if event.users:
            sessions = [s for user in event.users for s in connections.of_user(user)]
        else:
            sessions = [s for s in connections if s.user.name != event.user]
        for session in sessions:
            session.outbox.enqueue_frame(frame)
        self.other_deliveries += len(sessions)
        self.frames_out["room_added"] += len(sessions)

    # -- joining and leaving -----------------------------------------------------------------

    async def join(self, room: Room, conn_id: str, user: str, outbox: Outbox,
                   after: int | None, *, ref: str | None = None) -> JoinResult:
        """Subscribe, replay what was missed after `after`, enqueue `joined`, then go live."""
        self.leave(room.name, conn_id)
        subs = self._rooms.setdefault(room.name, {})
        sub = Subscription(room, conn_id, user, outbox)
        subs[conn_id] = sub
        try:
            await self._ensure_subscribed(room.name)
            result = await self._replay(sub, after)
        except BaseException:
            self.leave(room.name, conn_id)
            raise
        if self._rooms.get(room.name, {}).get(conn_id) is not sub or outbox.closing:
            return result  # left (or disconnected) while replaying
        self._go_live(sub, result, ref)
        return result

    async def _ensure_subscribed(self, room: str) -> None:
        if room in self._subscribed:
            return
        pending = self._subscribing.get(room)
        if pending is not None:
            await asyncio.shield(pending)
            return
        pending = asyncio.get_running_loop().create_future()
        self._subscribing[room] = pending
        try:
            await self.broker.subscribe(room)
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: joiners waiting on it re-raise it themselves
            raise
        else:
            self._subscribed.add(room)
            pending.set_result(None)
        finally:
            del self._subscribing[room]

    async def _replay(self, sub: Subscription, after: int | None) -> JoinResult:
        room_id = sub.room.id
        if after is None:
            latest = await self.store.latest_seq(room_id)
            return JoinResult(max(latest, sub.max_seen), False, 0)
        # The room's log: messages and the events (edits, deletions, reactions) between them.
        missed = await self.store.room_log_after(room_id, after, self.replay_max + 1)
        if len(missed) > self.replay_max:
            await self._enqueue_history(sub, missed[: self.replay_max])
            latest = await self.store.latest_seq(room_id)
            return JoinResult(max(latest, sub.max_seen), True, self.replay_max)
        await self._enqueue_history(sub, missed)
        if missed:
            cursor = missed[-1].seq
        else:
            # A client may claim more than exists (e.g. a restored database): clamp so that
            # live messages above the real latest seq are not mistaken for duplicates.
            cursor = min(after, await self.store.latest_seq(room_id))
        cursor = await self._catch_up(sub, cursor)
        return JoinResult(cursor, False, len(missed))

    async def _catch_up(self, sub: Subscription, cursor: int) -> int:
        """Read from the store until every live seq seen meanwhile has been enqueued."""
        while sub.max_seen > cursor:
            page = await self.store.room_log_after(sub.room.id, cursor, CATCH_UP_PAGE)
            if not page:
                break
            await self._enqueue_history(sub, page)
            cursor = page[-1].seq
        return cursor

    async def _enqueue_history(self, sub: Subscription, messages: list[LogEntry]) -> None:
        outbox = sub.outbox
        for message in messages:
            # Replay is this connection's own backlog: pace it to the socket instead of
            # overflowing the bound and evicting a client for resuming.
            if outbox.queued_bytes > outbox.limit_bytes // 2:
                await outbox.wait_below(outbox.limit_bytes // 4)
            if not outbox.enqueue(room_events.log_frame(message)):
                return
            self.replayed += 1
            self.frames_out["message"] += 1

    def _go_live(self, sub: Subscription, result: JoinResult, ref: str | None) -> None:
        sub.last_seq = result.seq
        sub.live = True
        joined: dict[str, object] = {"op": "joined", "ref": ref, "room": sub.room.name,
                                     "seq": result.seq}
        if result.truncated:
            joined["truncated"] = True
        sub.outbox.enqueue(protocol.encode(joined))
        self.joins += 1
        self.frames_out["joined"] += 1
        for frame in self._active_streams(sub.room.name):
            sub.outbox.enqueue(frame)
            self.frames_out["stream_start"] += 1

    def leave(self, room: str, conn_id: str) -> bool:
        subs = self._rooms.get(room)
        if subs is None:
            return False
        sub = subs.pop(conn_id, None)
        if sub is None:
            return False
        if sub.resync is not None:
            sub.resync.cancel()
        if not subs:
            del self._rooms[room]
            task = asyncio.get_running_loop().create_task(self._unsubscribe_if_empty(room))
            task.add_done_callback(_log_failure)
        return True

    async def _unsubscribe_if_empty(self, room: str) -> None:
        if room not in self._rooms and room in self._subscribed:
            self._subscribed.discard(room)
            await self.broker.unsubscribe(room)

    # -- recovery after the broker lost events -------------------------------------------------

    def resync_all(self) -> None:
        """The broker may have lost events: re-read every room with live subscribers.

        Each room is read once from the lowest seq its subscribers have, and each message is
        encoded once for all of them; subscribers go live again when they have caught up.
        """
        for room, subs in self._rooms.items():
            live = [sub for sub in subs.values() if sub.live]
            if not live:
                continue
            for sub in live:
                sub.live = False
                sub.max_seen = max(sub.max_seen, sub.last_seq)
            self.resyncs += 1
            task = asyncio.get_running_loop().create_task(self._resync_room(room, live))
            self._room_resyncs.add(task)
            task.add_done_callback(self._room_resyncs.discard)

    async def _resync_room(self, room: str, subs: list[Subscription]) -> None:
        """Re-read `room` from the lowest seq `subs` have (a gap one saw, or a broker outage
        for all), deliver what each is missing, then put them live again."""
        room_id = subs[0].room.id
        cursor = min(sub.last_seq for sub in subs)
        waits = 0
        try:
            while True:
                page = await self.store.room_log_after(room_id, cursor, CATCH_UP_PAGE)
                for message in page:
                    frame = wsframe.text_frame(room_events.log_frame(message))
                    count = 0
                    for sub in subs:
                        if message.seq > sub.last_seq:
                            sub.outbox.enqueue_frame(frame)
                            sub.last_seq = message.seq
                            count += 1
                    self.frames_out["message"] += count
                if page:
                    cursor = page[-1].seq
                elif all(sub.max_seen <= cursor for sub in subs):
                    break
                elif waits < RESYNC_MAX_WAITS:
                    waits += 1  # a seq was seen that this read did not return yet: retry
                    await asyncio.sleep(0.05)
                else:
                    raise RuntimeError(f"seq {max(s.max_seen for s in subs)} never readable")
        except Exception:
            log.exception("room %s: re-reading missed messages from the store failed", room)
            for sub in subs:
                sub.outbox.close(1011, "could not recover missed messages; reconnect")
            return
        current = self._rooms.get(room, {})
        for sub in subs:
            if current.get(sub.conn_id) is sub:
                sub.last_seq = max(sub.last_seq, cursor)
                sub.live = True
                sub.resync = None

    def leave_all(self, conn_id: str, rooms: list[str]) -> None:
        for room in rooms:
            self.leave(room, conn_id)


def _op_of(event: Event) -> str:
    """The op of a room event's frame other than `message`, without parsing it."""
    if event.kind != "stream":
        return event.kind  # typing
    if event.key:
        return "stream_delta"
    return "stream_start" if event.frame.startswith(b'{"op":"stream_start"') else "stream_end"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("broker unsubscribe failed: %r", task.exception())
