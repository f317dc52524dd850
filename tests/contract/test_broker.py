"""The Broker contract (`chatserver.broker.base`), run against every backend in `BACKENDS`.

Tests that need a second instance skip on the memory backend, which is one process by design.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from chatserver.broker.base import LOCAL_DELIVERY_MAX, Broker, Event

BACKENDS = ["memory", "redis"]
WAIT = 15.0  # seconds: generous for a slow 2-core machine; the checks poll, not sleep
# Local delivery is due within LOCAL_DELIVERY_MAX; the slack is for a busy machine's loop.
LOCAL_SETTLE = LOCAL_DELIVERY_MAX + 0.2


@dataclass
class Recorder:
    """A handler and resync callback that remember what they were given."""

    events: list[Event] = field(default_factory=list)
    resyncs: int = 0

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def resync(self) -> None:
        self.resyncs += 1

    def of_room(self, room: str) -> list[Event]:
        return [e for e in self.events if e.room == room and e.kind != "presence"]

    def seqs(self, room: str) -> list[int]:
        return [e.seq for e in self.of_room(room)]


async def eventually(check: Callable[[], bool], timeout: float = WAIT,
                     what: str = "condition") -> None:
    """Poll `check` until it holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g}s")
        await asyncio.sleep(0.01)


def message(room: str, seq: int, frame: bytes | None = None, user: str = "alice") -> Event:
    body = frame if frame is not None else orjson.dumps(
        {"op": "message", "room": room, "seq": seq, "text": f"m{seq}"})
    return Event("message", room, body, seq=seq, user=user)


def presence(user: str, status: str, rooms: tuple[str, ...]) -> Event:
    """The presence event as the server builds it (see `presence_event`), spelled out."""
    frame = orjson.dumps({"op": "presence", "user": user, "status": status})
    return Event("presence", "", frame, user=user, rooms=rooms, key=f"p:{user}")


def rooms_event(users: tuple[str, ...], all_but: str = "") -> Event:
    """A room announced to `users` (none: to everyone but `all_but`), as
    chatserver.room_announce builds it."""
    frame = orjson.dumps({"op": "room_added", "room": {"name": "dm-1", "kind": "direct"}})
    return Event("rooms", "", frame, user=all_but, users=users)


def logout_event(token_hash: str = "h-1") -> Event:
    """A token's logout, as chatserver.credentials builds it."""
    return Event("logout", "", b"", key=token_hash)


@dataclass
class Instances:
    """Opens brokers of one backend that share one medium (one Redis), as instances would."""

    backend: str
    build: Callable[..., Broker]
    opened: list[Broker] = field(default_factory=list)

    async def open(self, instance_id: str = "a", **options: Any) -> tuple[Broker, Recorder]:
        broker = self.build(instance_id, **options)
        recorder = Recorder()
        broker.set_handler(recorder.handle)
        broker.set_resync(recorder.resync)
        await broker.open()
        self.opened.append(broker)
        return broker, recorder

    def require_several(self) -> None:
        if self.backend == "memory":
            pytest.skip("the memory broker serves one process: there is no other instance")


def _builder(backend: str, request: pytest.FixtureRequest) -> Callable[..., Broker]:
    if backend == "memory":
        from chatserver.broker.memory import MemoryBroker

        return lambda instance_id, **options: MemoryBroker()
    if backend == "redis":
        from chatserver.broker.redis import RedisBroker

        url = request.getfixturevalue("redis_url")
        return lambda instance_id, **options: RedisBroker(url, instance_id=instance_id,
                                                          **options)
    raise AssertionError(f"no builder for backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def instances(request: pytest.FixtureRequest) -> AsyncIterator[Instances]:
    """Builds brokers of the backend under test; closes every one afterwards."""
    made = Instances(request.param, _builder(request.param, request))
    yield made
    for broker in made.opened:
        await broker.close()


# -- one instance ------------------------------------------------------------------------------


async def test_local_delivery_is_prompt(instances: Instances) -> None:
    """The publishing instance's handler has the event within LOCAL_DELIVERY_MAX of publish
    (plus a busy loop's slack)."""
    broker, seen = await instances.open()
    await broker.subscribe("general")
    event = message("general", 1)
    broker.publish(event)
    await asyncio.sleep(LOCAL_SETTLE)
    assert seen.events == [event]


async def test_unsubscribed_room_is_not_delivered(instances: Instances) -> None:
    """An instance not subscribed to a room gets none of its events."""
    broker, seen = await instances.open()
    await broker.subscribe("general")
    broker.publish(message("random", 1))
    await asyncio.sleep(LOCAL_SETTLE)
    assert seen.events == []


async def test_unsubscribe_stops_delivery(instances: Instances) -> None:
    """After unsubscribe, the room's events are no longer delivered."""
    broker, seen = await instances.open()
    await broker.subscribe("general")
    broker.publish(message("general", 1))
    await asyncio.sleep(LOCAL_SETTLE)
    await broker.unsubscribe("general")
    broker.publish(message("general", 2))
    await asyncio.sleep(LOCAL_SETTLE)
    assert seen.seqs("general") == [1]


async def test_presence_is_delivered_for_any_subscribed_room(instances: Instances) -> None:
    """A presence event reaches an instance subscribed to any one of the user's rooms."""
    broker, seen = await instances.open()
    await broker.subscribe("b")
    broker.publish(presence("alice", "online", ("a", "b")))
    broker.publish(presence("bob", "online", ("c",)))
    await asyncio.sleep(LOCAL_SETTLE)
    assert [e.user for e in seen.events] == ["alice"]


async def test_rooms_events_are_delivered_without_any_subscription(
        instances: Instances) -> None:
    """A `rooms` event (for users, not a room) reaches the publishing instance's handler
    although it subscribed to no room."""
    broker, seen = await instances.open()
    event = rooms_event(("alice", "bob"))
    broker.publish(event)
    await asyncio.sleep(LOCAL_SETTLE)
    assert seen.events == [event]


async def test_logout_events_are_delivered_without_any_subscription(
        instances: Instances) -> None:
    """A `logout` event (for connections, not a room) reaches the publishing instance's
    handler although it subscribed to no room."""
    broker, seen = await instances.open()
    event = logout_event()
    broker.publish(event)
    await asyncio.sleep(LOCAL_SETTLE)
    assert seen.events == [event]


async def test_local_events_keep_publish_order(instances: Instances) -> None:
    """Local delivery is in publish order."""
    broker, seen = await instances.open()
    await broker.subscribe("general")
    for seq in range(1, 101):
        broker.publish(message("general", seq))
    await asyncio.sleep(LOCAL_SETTLE)
    assert seen.seqs("general") == list(range(1, 101))


async def test_presence_first_and_last_connection(instances: Instances) -> None:
    """Opening the first connection and closing the last one are reported; others are not."""
    broker, _ = await instances.open()
    assert await broker.connection_opened("alice", "c1") is True
    assert await broker.connection_opened("alice", "c2") is False
    assert await broker.connection_opened("bob", "c3") is True
    assert await broker.connection_closed("alice", "c1") is False
    assert await broker.connection_closed("alice", "c2") is True
    assert await broker.connection_closed("alice", "c2") is False  # already closed
    assert await broker.connection_opened("alice", "c4") is True  # online again


async def test_online_users_follows_connections(instances: Instances) -> None:
    """A user is online from their first connection opening until their last one closes."""
    broker, _ = await instances.open()
    assert await broker.online_users(["alice", "bob"]) == set()
    await broker.connection_opened("alice", "c1")
    await broker.connection_opened("alice", "c2")
    await broker.connection_opened("bob", "c3")
    assert await broker.online_users(["alice", "bob", "carol"]) == {"alice", "bob"}
    await broker.connection_closed("alice", "c1")
    assert await broker.online_users(["alice", "bob"]) == {"alice", "bob"}  # c2 still open
    await broker.connection_closed("alice", "c2")
    await broker.connection_closed("bob", "c3")
    assert await broker.online_users(["alice", "bob"]) == set()


async def test_online_users_answers_only_for_the_users_asked(instances: Instances) -> None:
    """Only asked users are answered; unknown names, duplicates and an empty list are fine."""
    broker, _ = await instances.open()
    await broker.connection_opened("alice", "c1")
    await broker.connection_opened("bob", "c2")
    assert await broker.online_users(["alice"]) == {"alice"}
    assert await broker.online_users(["nobody", "alice", "alice"]) == {"alice"}
    assert await broker.online_users([]) == set()


async def test_online_users_takes_a_long_list(instances: Instances) -> None:
    """A list longer than one lookup round (over a thousand users) is answered whole."""
    broker, _ = await instances.open("a")
    # Asked on another instance where there is one: every answer then comes from the medium.
    reader = broker if instances.backend == "memory" else (await instances.open("b"))[0]
    users = [f"user{i:04d}" for i in range(1200)]
    for user in users[::7]:
        await broker.connection_opened(user, f"c-{user}")
    assert await reader.online_users(users) == set(users[::7])


async def test_close_is_idempotent(instances: Instances) -> None:
    """Closing twice is harmless."""
    broker, _ = await instances.open()
    await broker.close()
    await broker.close()


# -- several instances -------------------------------------------------------------------------


async def test_events_arrive_at_another_instance_in_publish_order(instances: Instances) -> None:
    """Every event of a room published on one instance reaches another, in publish order."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, seen_b = await instances.open("b")
    await b.subscribe("general")
    for seq in range(1, 2001):
        a.publish(message("general", seq))
    await eventually(lambda: len(seen_b.of_room("general")) >= 2000, what="2000 events at b")
    assert seen_b.seqs("general") == list(range(1, 2001))


async def test_rooms_keep_their_own_order_when_interleaved(instances: Instances) -> None:
    """Interleaved rooms each arrive in their own publish order."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, seen_b = await instances.open("b")
    rooms = ["r1", "r2", "r3"]
    for room in rooms:
        await b.subscribe(room)
    for seq in range(1, 301):
        for room in rooms:
            a.publish(message(room, seq))
    await eventually(lambda: len(seen_b.events) >= 900, what="900 events at b")
    for room in rooms:
        assert seen_b.seqs(room) == list(range(1, 301))


async def test_no_instance_gets_its_own_events_back(instances: Instances) -> None:
    """Each instance sees its own events exactly once (locally), never again from the network."""
    instances.require_several()
    a, seen_a = await instances.open("a")
    b, seen_b = await instances.open("b")
    await a.subscribe("general")
    await b.subscribe("general")
    for seq in range(1, 51):
        a.publish(message("general", seq))
    await eventually(lambda: len(seen_b.events) >= 50, what="50 events at b")
    # b's marker travels after a's events went round trip through the same server.
    b.publish(message("general", 1000, user="bob"))
    await eventually(lambda: 1000 in seen_a.seqs("general"), what="b's marker at a")
    a.publish(message("general", 2000))
    await eventually(lambda: 2000 in seen_b.seqs("general"), what="a's marker at b")
    assert seen_a.seqs("general") == list(range(1, 51)) + [1000, 2000]
    assert seen_b.seqs("general") == list(range(1, 51)) + [1000, 2000]


async def test_instance_not_subscribed_gets_nothing_from_others(instances: Instances) -> None:
    """Events of a room an instance did not subscribe to never reach its handler."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, seen_b = await instances.open("b")
    await b.subscribe("marker")
    for seq in range(1, 21):
        a.publish(message("general", seq))
    a.publish(message("marker", 1))
    await eventually(lambda: seen_b.seqs("marker") == [1], what="marker at b")
    assert seen_b.of_room("general") == []


async def test_unsubscribe_stops_remote_delivery(instances: Instances) -> None:
    """After unsubscribe, another instance's events of the room no longer arrive."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, seen_b = await instances.open("b")
    await b.subscribe("general")
    await b.subscribe("marker")
    a.publish(message("general", 1))
    await eventually(lambda: seen_b.seqs("general") == [1], what="first event at b")
    await b.unsubscribe("general")
    a.publish(message("general", 2))
    a.publish(message("marker", 1))
    await eventually(lambda: seen_b.seqs("marker") == [1], what="marker at b")
    assert seen_b.seqs("general") == [1]


async def test_frames_arrive_byte_identical(instances: Instances) -> None:
    """Frames reach other instances as the exact bytes published, whatever they contain."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, seen_b = await instances.open("b")
    await b.subscribe("general")
    frames = [
        orjson.dumps({"op": "message", "text": "line\nbreak \u00e9\u2603 \U0001f600"}),
        b"raw\nnewlines\n\n and \x00 \xff bytes",
        b"",
        b"{" + b"x" * 60_000 + b"}",
    ]
    for seq, frame in enumerate(frames, start=1):
        a.publish(message("general", seq, frame=frame))
    await eventually(lambda: len(seen_b.events) >= len(frames), what="frames at b")
    assert [e.frame for e in seen_b.events] == frames
    received = seen_b.events[0]
    assert (received.kind, received.room, received.seq, received.user) == (
        "message", "general", 1, "alice")


async def test_event_fields_survive_the_network(instances: Instances) -> None:
    """Kind, room, seq, user and presence rooms arrive as published."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, seen_b = await instances.open("b")
    await b.subscribe("general")
    sent = [
        Event("typing", "general", b'{"op":"typing"}', user="alice"),
        Event("stream", "general", b'{"op":"stream_delta"}', user="alice"),
        message("general", 7),
        presence("alice", "offline", ("elsewhere", "general")),
    ]
    for event in sent:
        a.publish(event)
    await eventually(lambda: len(seen_b.events) >= len(sent), what="events at b")
    assert seen_b.events == sent


async def test_rooms_events_reach_every_other_instance(instances: Instances) -> None:
    """A `rooms` event reaches another instance that subscribed to no room, its users (or
    the user left out) intact."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, seen_b = await instances.open("b")
    sent = [rooms_event(("alice", "bob")), rooms_event((), all_but="carol")]
    for event in sent:
        a.publish(event)
    await eventually(lambda: len(seen_b.events) >= len(sent), what="rooms events at b")
    assert seen_b.events == sent


async def test_logout_events_reach_every_other_instance(instances: Instances) -> None:
    """A `logout` event reaches another instance that subscribed to no room, its token hash
    intact."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, seen_b = await instances.open("b")
    event = logout_event("9f86d081884c7d659a2feaa0c55ad015")
    a.publish(event)
    await eventually(lambda: len(seen_b.events) >= 1, what="logout event at b")
    assert seen_b.events == [event]


async def test_presence_across_two_instances(instances: Instances) -> None:
    """A user is online while any connection on any instance is open."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, _ = await instances.open("b")
    assert await a.connection_opened("alice", "c1") is True
    assert await b.connection_opened("alice", "c2") is False
    assert await a.connection_closed("alice", "c1") is False
    assert await b.connection_closed("alice", "c2") is True
    assert await b.connection_opened("alice", "c3") is True


async def test_online_users_sees_every_instance(instances: Instances) -> None:
    """Each instance sees users connected to any instance as online, and gone once closed."""
    instances.require_several()
    a, _ = await instances.open("a")
    b, _ = await instances.open("b")
    await a.connection_opened("alice", "c1")
    await b.connection_opened("bob", "c2")
    assert await a.online_users(["alice", "bob"]) == {"alice", "bob"}
    assert await b.online_users(["alice", "bob"]) == {"alice", "bob"}
    await a.connection_closed("alice", "c1")
    assert await b.online_users(["alice", "bob"]) == {"bob"}
