"""The Redis broker: several instances (processes, hosts) share rooms through Redis pub/sub.

Delivery follows `chatserver.broker.base`. How this backend provides it:

- Redis first, then local: `publish` appends the event to a bounded queue and returns. One
  publisher task drains the queue, sending everything pending as one pipeline per round;
  rounds run one after the other, so events reach Redis in publish order. This instance's
  own subscribers get an event once the round carrying it has been answered by Redis (or
  after LOCAL_DELIVERY_MAX, whichever comes first; at once while Redis is unreachable), always in
  publish order: the local fan-out (one socket write per member) would otherwise delay the
  write to Redis, and every other instance's fan-out with it. A full queue, or Redis being
  unreachable, drops events (counted in `dropped`): the store is the source of truth. After a
  drop the publisher's next round starts with a `resync` request on the presence channel, so
  other instances re-read their rooms from the store; after Redis was unreachable it also
  calls this instance's resync.
- One PubSub connection, read by one listener task, carries every subscribed room channel
  and the instance-wide presence channel, which also carries `rooms` and `logout` events
  (wire format: `chatserver.broker.redis_wire`). Events whose origin is this instance are
  skipped: local subscribers already had them.
- redis-py does not resubscribe a PubSub after Redis restarts, so the listener does: on any
  connection error it backs off (0.1 s doubling to 2 s, with jitter), reconnects,
  subscribes to the presence channel and every room wanted now, and once Redis has confirmed
  those subscriptions (a PING marker answered after them) calls the resync callback, because
  events published meanwhile were lost.
- `subscribe` returns once Redis confirmed the subscription, so a joiner's store read comes
  after the point from which events reach us. While Redis is down it only records the room
  (never raises): the hub still delivers locally, and the reconnect subscribes and resyncs.
- Presence lives in Redis sorted sets with expiring members (`redis_presence`); a periodic
  task refreshes this instance's members and sweeps those of crashed instances, announcing
  their users offline. While Redis is down, `connection_opened`/`connection_closed` return
  False (logged once) so connections still work; the refresh announces them later.
  `online_users` (a snapshot) instead raises BrokerUnavailable while Redis is unreachable: an
  answer that leaves out everyone on other instances would show them offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError
from redis.utils import get_lib_version

from chatserver.broker.base import (
    INSTANCE_WIDE,
    LOCAL_DELIVERY_MAX,
    Broker,
    Event,
    presence_event,
)
from chatserver.broker.redis_presence import RedisPresence
from chatserver.broker.redis_wire import Channels, WireError, decode, encode_event, encode_resync
from chatserver.errors import BrokerUnavailable

log = logging.getLogger(__name__)

RoomsOfUser = Callable[[str], Awaitable[Sequence[str]]]

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 2.0
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
POOL_MAX_CONNECTIONS = 64  # per client; callers beyond it wait for one
OPEN_TIMEOUT = 5.0  # open() waits this long for the first subscription, then goes on
SUBSCRIBE_TIMEOUT = 5.0
CLOSE_FLUSH_TIMEOUT = 2.0
CLOSE_TIMEOUT = CLOSE_FLUSH_TIMEOUT + 5.0  # all of close(), presence clean-up included
DROP_LOG_INTERVAL = 10.0
PUBLISH_BATCH_MAX = 1000  # events per pipeline: bounds one round's memory and latency
_MARKER = b"chat-subscribed"  # PING payload: the reply says every earlier SUBSCRIBE is in force
_NETWORK_ERRORS = (RedisError, OSError, TimeoutError)


class RedisBroker(Broker):
    """Broker over one Redis server; see the module docstring for how it keeps the contract.

    `rooms_of_user(user_name)` returns the names of the user's rooms. The broker needs it to
    announce presence changes it discovers itself (a crashed instance's users going offline,
    connections opened while Redis was down coming online); without it those announcements
    reach no room. `presence_ttl` is how long a connection of a crashed instance still counts.
    """

    def __init__(self, url: str, *, instance_id: str, presence_ttl: float = 30.0,
                 publish_queue_max: int = 100_000,
                 rooms_of_user: RoomsOfUser | None = None) -> None:
        super().__init__()
        self.instance_id = instance_id
        self._rooms_of_user = rooms_of_user
        self._queue_max = publish_queue_max
        # No retries inside redis-py: a retried pipeline could publish events twice, and
        # the loops below already reconnect with back-off.
        options: dict[str, Any] = dict(
            socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT,
            socket_keepalive=True, retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._redis = _client(url, options)
        # The listener's own pool: its connection objects are never handed to the publisher,
        # whatever a late write on a dropped PubSub connection does to them.
        self._listen_redis = _client(url, options)
        self._channels = Channels(int(self._redis.connection_pool.connection_kwargs.get("db", 0)))
        self._presence = RedisPresence(self._redis, instance_id, presence_ttl)
        self._rooms: set[str] = set()  # rooms wanted, whether or not Redis is reachable
        self._pubsub: PubSub | None = None  # set while subscribed and read by the listener
        self._listening = asyncio.Event()
        self._resubscribed = asyncio.Event()  # wakes a publisher waiting for Redis
        self._resync_pending = False
        self._confirmations: dict[bytes, list[asyncio.Future[None]]] = {}
        self._queue: deque[Event] = deque()  # to send to Redis
        self._local: deque[Event] = deque()  # to deliver here, in publish order
        self._local_timer: asyncio.TimerHandle | None = None
        self._queue_ready = asyncio.Event()
        self._publisher_down = False
        self._outgoing_lost = False
        self._in_flight = False
        self._drop_logged_at = -DROP_LOG_INTERVAL
        self._tasks: list[asyncio.Task[None]] = []
        self._state = "new"  # new -> open -> closing -> closed
        self._warned: set[str] = set()
        # Counters for metrics and tests.
        self.published = 0
        self.dropped = 0
        self.received = 0
        self.reconnects = 0
        self._resyncs_called = 0

    def counters(self) -> dict[str, int]:
        return {"published": self.published, "dropped": self.dropped,
                "received": self.received, "reconnects": self.reconnects}

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the tasks; wait (bounded) for the first subscription, never fail on Redis."""
        if self._state != "new":
            return
        self._state = "open"
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen_forever(), name=f"redis-listener-{self.instance_id}"),
            loop.create_task(self._publish_forever(), name=f"redis-publisher-{self.instance_id}"),
            loop.create_task(self._presence_forever(), name=f"redis-presence-{self.instance_id}"),
        ]  # the presence upkeep last: close() stops it first
        try:
            await asyncio.wait_for(self._listening.wait(), OPEN_TIMEOUT)
        except TimeoutError:
            log.warning("Redis broker: not subscribed after %gs; retrying in the background",
                        OPEN_TIMEOUT)

    async def close(self) -> None:
        """Announce this instance's remaining users offline, flush, stop; idempotent."""
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            await self._close_clients()
            return
        self._state = "closing"
        # Bounded: shutdown must not hang on a Redis that stopped answering (a test saw close
        # wait forever right after a Redis restart). asyncio.wait, unlike wait_for, does not
        # wait for the abandoned work to finish its cancellation.
        shutting = asyncio.ensure_future(self._shut_down())
        done, _ = await asyncio.wait({shutting}, timeout=CLOSE_TIMEOUT)
        if not done:
            shutting.cancel()
            self._state = "closed"
            log.warning("Redis broker: close gave up after %.0f s (Redis not answering?); "
                        "presence entries expire on their own", CLOSE_TIMEOUT)

    async def _shut_down(self) -> None:
        # Upkeep first: a refresh racing the removal below could re-add members.
        upkeep = self._tasks[-1]
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
        try:
            for user in await self._presence.remove_all():
                await self._announce(user, "offline")
        except _NETWORK_ERRORS as exc:
            log.warning("Redis broker: presence not cleaned up at close: %r", exc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_FLUSH_TIMEOUT
        while (self._queue or self._in_flight) and not self._publisher_down:
            if loop.time() >= deadline:
                log.warning("Redis broker: closing with %d events unsent", len(self._queue))
                break
            await asyncio.sleep(0.01)
        self._state = "closed"
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_clients()

    async def _close_clients(self) -> None:
        await self._redis.aclose()
        await self._listen_redis.aclose()

    async def ping(self) -> None:
        if self._state != "open" or not self._listening.is_set():
            raise BrokerUnavailable("the message broker (Redis) is not connected")
        try:
            await self._redis.ping()
        except _NETWORK_ERRORS as exc:
            raise BrokerUnavailable("the message broker (Redis) is unreachable") from exc

    # -- interest --------------------------------------------------------------------------------

    async def subscribe(self, room: str) -> None:
        """Receive the room's events from now on; returns once Redis confirmed it (bounded).

        Never raises for Redis being down: the listener subscribes on reconnect and resyncs.
        """
        self._rooms.add(room)
        pubsub = self._pubsub
        if pubsub is None:
            return
        channel = self._channels.room(room)
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(channel, []).append(confirmed)
        try:
            if await _send(pubsub, "SUBSCRIBE", channel):
                await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT)
        except _NETWORK_ERRORS as exc:
            log.debug("subscribe %s not confirmed (%r); the listener will resubscribe",
                      room, exc)
        finally:
            waiting = self._confirmations.get(channel)
            if waiting and confirmed in waiting:
                waiting.remove(confirmed)
                if not waiting:
                    del self._confirmations[channel]

    async def unsubscribe(self, room: str) -> None:
        self._rooms.discard(room)
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            await _send(pubsub, "UNSUBSCRIBE", self._channels.room(room))
        except _NETWORK_ERRORS as exc:
            # Events of the room that still arrive are filtered out by `_wants`.
            log.debug("unsubscribe %s failed: %r", room, exc)

    def _wants(self, event: Event) -> bool:
        if event.kind == "presence":
            return any(room in self._rooms for room in event.rooms)
        if event.kind in INSTANCE_WIDE:
            return True  # for users, not a room: any instance may hold their connections
        return event.room in self._rooms

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        # Redis first: other instances hear of the event without waiting for this one's
        # fan-out (measured: cross-instance p50 +9-13 ms at 1,000 members the other way).
        self._local.append(event)
        loop = asyncio.get_running_loop()
        if self._state == "closed" or self._publisher_down or \
                len(self._queue) >= self._queue_max:
            if self._state != "closed":
                self._drop(1)
            loop.call_soon(self._deliver_locally)
            return
        self._queue.append(event)
        self._queue_ready.set()
        if self._local_timer is None:
            # a slow Redis must not hold this instance's own deliveries back for longer
            self._local_timer = loop.call_later(LOCAL_DELIVERY_MAX, self._deliver_locally)

    def _deliver_locally(self) -> None:
        """Hand every event published so far to this instance's subscribers, in order."""
        if self._local_timer is not None:
            self._local_timer.cancel()
            self._local_timer = None
        local, handler = self._local, self._handler
        while local:
            event = local.popleft()
            if handler is not None and self._wants(event):
                handler(event)

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._outgoing_lost = True
        # At most one line per interval: under overload this runs for every event.
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            self._drop_logged_at = now
            log.warning("Redis broker: %d published events dropped so far (queue full or Redis "
                        "unreachable); other instances re-read from the store", self.dropped)

    async def _publish_forever(self) -> None:
        while True:
            await self._queue_ready.wait()
            self._queue_ready.clear()
            self._in_flight = True
            while self._queue or self._outgoing_lost:
                try:
                    await self._send_round()
                except _NETWORK_ERRORS as exc:
                    log.debug("publish round failed: %r", exc)
                    self._publisher_down = True
                    resyncs_before = self._resyncs_called
                    await self._wait_until_reachable()
                    self._publisher_down = False
                    # Incoming events were probably lost too; unless the listener already
                    # resynced after reconnecting, re-read the rooms now.
                    if self._resyncs_called == resyncs_before:
                        self._call_resync()
                except Exception:  # a bug must not silence publishing for good
                    log.exception("Redis broker: publish round failed")
            self._in_flight = False

    async def _send_round(self) -> None:
        """Send everything pending (up to a batch) as one pipeline; drop it if that fails."""
        origin, channels = self.instance_id, self._channels
        count = min(len(self._queue), PUBLISH_BATCH_MAX)
        batch = [self._queue.popleft() for _ in range(count)]
        try:
            pipe = self._redis.pipeline(transaction=False)
            if self._outgoing_lost:
                # Cleared before the round: a drop during it sets it again.
                self._outgoing_lost = False
                pipe.publish(channels.presence, encode_resync(origin))
            for event in batch:
                pipe.publish(channels.of(event), encode_event(event, origin))
            await pipe.execute()
        except BaseException:
            self._drop(len(batch))
            raise
        finally:
            self._deliver_locally()
        self.published += len(batch)

    async def _wait_until_reachable(self) -> None:
        delay = BACKOFF_INITIAL
        self._resubscribed.clear()
        while True:
            # The listener getting through first cuts the back-off short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resubscribed.wait(), _jitter(delay))
            self._resubscribed.clear()
            delay = min(delay * 2, BACKOFF_MAX)
            try:
                await self._redis.ping()
                return
            except _NETWORK_ERRORS:
                continue

    # -- listening -------------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        delay = BACKOFF_INITIAL
        lost = False
        while True:
            pubsub = self._listen_redis.pubsub()
            try:
                await self._subscribe_all(pubsub, resync=lost)
                delay = BACKOFF_INITIAL
                await self._read(pubsub)
            except _NETWORK_ERRORS as exc:
                self._warn_once("listen", f"Redis broker: connection lost ({exc!r}); "
                                          "reconnecting")
            except Exception:  # never let the listener die: log, reconnect, resync
                log.exception("Redis broker: listener failed; reconnecting")
            finally:
                self._pubsub = None
                self._listening.clear()
                self._release_confirmations()
                await _close_quietly(pubsub)
            lost = True
            self.reconnects += 1
            await asyncio.sleep(_jitter(delay))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _subscribe_all(self, pubsub: PubSub, *, resync: bool) -> None:
        """Subscribe to the presence channel and every wanted room, then send the marker."""
        room = self._channels.room
        subscribed = set(self._rooms)
        await pubsub.subscribe(self._channels.presence, *(room(r) for r in subscribed))
        while True:  # rooms wanted or dropped while the commands above were in flight
            missing = self._rooms - subscribed
            extra = subscribed - self._rooms
            if not missing and not extra:
                break
            if missing:
                await pubsub.subscribe(*(room(r) for r in missing))
            if extra:
                await pubsub.unsubscribe(*(room(r) for r in extra))
            subscribed = (subscribed | missing) - extra
        self._pubsub = pubsub  # from here on subscribe()/unsubscribe() send directly
        self._resync_pending = resync
        await pubsub.ping(_MARKER)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            message: dict[str, Any] | None = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                self._on_payload(message["data"])
            elif kind == "subscribe":
                for waiting in self._confirmations.pop(message["channel"], ()):
                    if not waiting.done():
                        waiting.set_result(None)
            elif kind == "pong" and message["data"] == _MARKER:
                self._listening.set()
                self._resubscribed.set()
                if "listen" in self._warned:
                    self._warned.discard("listen")
                    log.info("Redis broker: reconnected and resubscribed")
                if self._resync_pending:
                    self._resync_pending = False
                    self._call_resync()

    def _on_payload(self, payload: bytes) -> None:
        try:
            envelope = decode(payload)
        except WireError as exc:
            self._warn_once("wire", f"Redis broker: ignoring unreadable payloads ({exc})")
            return
        if envelope.origin == self.instance_id:
            return  # our own: local subscribers had it inside publish()
        event = envelope.event
        if event is None:
            self._call_resync()  # the origin dropped events we may have wanted
            return
        self.received += 1
        handler = self._handler
        if handler is None or not self._wants(event):
            return
        try:
            handler(event)
        except Exception:
            log.exception("Redis broker: event handler failed")

    def _release_confirmations(self) -> None:
        """The connection is gone: let waiting subscribes return (the reconnect covers them)."""
        for waiting in self._confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._confirmations.clear()

    def _call_resync(self) -> None:
        self._resyncs_called += 1
        callback = self._resync
        if callback is None:
            return
        try:
            callback()
        except Exception:
            log.exception("Redis broker: resync callback failed")

    # -- presence --------------------------------------------------------------------------------

    async def connection_opened(self, user: str, conn_id: str) -> bool:
        try:
            first = await self._presence.opened(user, conn_id)
        except _NETWORK_ERRORS as exc:
            self._warn_once("presence", f"Redis broker: presence not recorded ({exc!r}); "
                                        "announcing it when Redis is back")
            return False
        self._warned.discard("presence")
        return first

    async def connection_closed(self, user: str, conn_id: str) -> bool:
        try:
            last = await self._presence.closed(user, conn_id)
        except _NETWORK_ERRORS as exc:
            self._warn_once("presence", f"Redis broker: presence not recorded ({exc!r}); "
                                        "the connection expires by itself")
            return False
        self._warned.discard("presence")
        return last

    async def online_users(self, users: Sequence[str]) -> set[str]:
        if self._state == "closed":
            raise BrokerUnavailable("the message broker is closed")
        try:
            return await self._presence.online(users)
        except _NETWORK_ERRORS as exc:
            raise BrokerUnavailable("the message broker (Redis) is unreachable; "
                                    "who is online is unknown for now") from exc

    async def _presence_forever(self) -> None:
        """Refresh this instance's members and sweep expired ones, every ttl/3."""
        period = self._presence.ttl / 3
        while True:
            # Jitter keeps the instances' sweeps from all landing on Redis at once.
            await asyncio.sleep(period * random.uniform(0.8, 1.0))
            try:
                for user in await self._presence.refresh():
                    await self._announce(user, "online")
                for user in await self._presence.sweep():
                    await self._announce(user, "offline")
            except _NETWORK_ERRORS as exc:
                log.debug("presence upkeep failed: %r", exc)
            except Exception:
                log.exception("Redis broker: presence upkeep failed")

    async def _announce(self, user: str, status: str) -> None:
        """Publish the same presence event the connection handler publishes."""
        rooms: Sequence[str] = ()
        if self._rooms_of_user is not None:
            try:
                rooms = await self._rooms_of_user(user)
            except Exception:
                log.exception("presence %s of %s not announced: rooms unknown", status, user)
                return
        self.publish(presence_event(user, status, rooms))

    def _warn_once(self, key: str, message: str) -> None:
        """Log a problem once until it clears, not once per event while Redis is down."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)


async def _send(pubsub: PubSub, *command: str | bytes) -> bool:
    """Write a command on the listener's connection from another task; False if it is gone.

    Not `pubsub.subscribe()`: on a write error redis-py reconnects the connection and
    resubscribes it by itself, behind the back of the listener that is about to drop it.
    Writing on a live connection is safe while the listener reads: replies arrive as
    messages, which the listener handles.
    """
    connection = pubsub.connection
    if connection is None or not connection.is_connected:
        return False
    # No suspension between the check and the write, so this never connects anew.
    await connection.send_command(*command, check_health=False)
    return True


# What CLIENT SETINFO tells Redis, resolved once: left to redis-py, every new connection
# looks its own version up in the installed packages' metadata (importlib.metadata reads
# files), on the event loop — seen blocking it for 0.35 s when a burst of connects grew the
# pool on a busy machine, enough to trip admission control.
_DRIVER_INFO = DriverInfo(name="redis-py", lib_version=get_lib_version())  # type: ignore[no-untyped-call]


def _client(url: str, options: dict[str, Any]) -> Redis:
    """A client whose callers wait (up to COMMAND_TIMEOUT) for a free connection: a burst of
    presence updates (a thousand clients leaving at once) otherwise fails past the pool's
    size with MaxConnectionsError instead of queueing."""
    pool = BlockingConnectionPool.from_url(url, max_connections=POOL_MAX_CONNECTIONS,
                                           timeout=COMMAND_TIMEOUT, driver_info=_DRIVER_INFO,
                                           **options)
    return Redis.from_pool(pool)


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.5, 1.0)


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
    except Exception as exc:  # the connection is already broken; nothing to do about it
        log.debug("closing a broken PubSub: %r", exc)
