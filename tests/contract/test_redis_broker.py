"""What only the Redis broker has to get right: Redis going away and coming back, instances
crashing, a publisher outrunning Redis. Each test that stops Redis runs its own server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from chatserver.broker.redis import RedisBroker
from chatserver.errors import BrokerUnavailable
from tests.contract.test_broker import Recorder, eventually, message, presence
from tests.services.redis import RedisServer

ROOMS = ("general",)


async def rooms_of_user(user: str) -> Sequence[str]:
    return ROOMS


class Cluster:
    """RedisBroker instances on one server, each with a recorder; closed afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.brokers: list[RedisBroker] = []

    async def open(self, instance_id: str, **options: Any) -> tuple[RedisBroker, Recorder]:
        options.setdefault("rooms_of_user", rooms_of_user)
        broker = RedisBroker(self.url, instance_id=instance_id, **options)
        recorder = Recorder()
        broker.set_handler(recorder.handle)
        broker.set_resync(recorder.resync)
        await broker.open()
        self.brokers.append(broker)
        return broker, recorder


@pytest.fixture
async def cluster(own_redis: RedisServer) -> AsyncIterator[Cluster]:
    made = Cluster(own_redis.url)
    yield made
    for broker in made.brokers:
        await broker.close()


@pytest.fixture
async def shared_cluster(redis_url: str) -> AsyncIterator[Cluster]:
    made = Cluster(redis_url)
    yield made
    for broker in made.brokers:
        await broker.close()


async def crash(broker: RedisBroker) -> None:
    """Simulate `kill -9` of the instance: its tasks stop, nothing is cleaned up."""
    for task in broker._tasks:
        task.cancel()
    await asyncio.gather(*broker._tasks, return_exceptions=True)
    await broker._close_clients()
    broker._state = "closed"  # the fixture's close() must not clean up after the "dead"


async def until_delivered(sender: RedisBroker, receiver: Recorder, room: str = "general",
                          timeout: float = 15.0) -> None:
    """Publish probes until one reaches `receiver` (the sender may still be backing off)."""
    deadline = time.monotonic() + timeout
    seq = 10_000
    while True:
        seq += 1
        sender.publish(message(room, seq))
        await asyncio.sleep(0.1)
        if any(s > 10_000 for s in receiver.seqs(room)):
            return
        assert time.monotonic() < deadline, f"nothing published reached the receiver in {room}"


def presence_of(recorder: Recorder, user: str, status: str) -> int:
    return sum(1 for e in recorder.events
               if e.kind == "presence" and e.user == user and status.encode() in e.frame)


async def test_listener_reconnects_resubscribes_and_resyncs_after_restart(
        cluster: Cluster, own_redis: RedisServer) -> None:
    """After Redis restarts mid-traffic, the listener resubscribes by itself and resyncs."""
    a, _ = await cluster.open("a")
    b, seen_b = await cluster.open("b")
    await b.subscribe("general")
    await b.subscribe("other")
    seq = 0

    async def traffic() -> None:
        nonlocal seq
        while True:
            seq += 1
            a.publish(message("general", seq))
            await asyncio.sleep(0.005)

    sender = asyncio.create_task(traffic())
    try:
        await eventually(lambda: len(seen_b.events) >= 20, what="traffic before the restart")
        await asyncio.to_thread(own_redis.restart)
        restarted_at = seq
        await eventually(lambda: seen_b.resyncs >= 1, what="resync after the restart")
        await eventually(lambda: any(s > restarted_at + 20 for s in seen_b.seqs("general")),
                         what="events published after the restart")
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    seqs = seen_b.seqs("general")
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert b.reconnects >= 1
    # Every room wanted before the outage is subscribed again, not just the busy one.
    a.publish(message("other", 1))
    await eventually(lambda: seen_b.seqs("other") == [1], what="event of the quiet room")


async def test_listener_survives_kill_and_late_start(cluster: Cluster,
                                                     own_redis: RedisServer) -> None:
    """Redis killed and started again seconds later: delivery resumes without help."""
    a, _ = await cluster.open("a")
    b, seen_b = await cluster.open("b")
    await b.subscribe("general")
    own_redis.kill()
    await asyncio.sleep(1.5)  # several back-off rounds fail meanwhile
    await asyncio.to_thread(own_redis.start)
    await eventually(lambda: seen_b.resyncs >= 1, what="resync")
    await until_delivered(a, seen_b)


async def test_publish_while_down_neither_raises_nor_blocks(cluster: Cluster,
                                                           own_redis: RedisServer) -> None:
    """With Redis down, publish returns at once, delivers locally and counts drops."""
    a, seen_a = await cluster.open("a")
    await a.subscribe("general")
    own_redis.kill()
    started = time.monotonic()
    for seq in range(1, 20_001):
        a.publish(message("general", seq))
        if seq % 1000 == 0:
            await asyncio.sleep(0)  # let the publisher find out that Redis is gone
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"publishing took {elapsed:.1f}s"
    assert seen_a.seqs("general") == list(range(1, 20_001))
    await eventually(lambda: a.dropped > 0, what="drops counted")


async def test_publisher_recovers_and_asks_others_to_resync(cluster: Cluster,
                                                           own_redis: RedisServer) -> None:
    """After Redis comes back the publisher delivers again and both instances have resynced."""
    a, seen_a = await cluster.open("a")
    b, seen_b = await cluster.open("b")
    await b.subscribe("general")
    own_redis.kill()
    for seq in range(1, 101):
        a.publish(message("general", seq))
        await asyncio.sleep(0.002)
    await eventually(lambda: a.dropped > 0, what="drops counted")
    await asyncio.to_thread(own_redis.start)
    await until_delivered(a, seen_b)
    await eventually(lambda: seen_a.resyncs >= 1 and seen_b.resyncs >= 1, what="resyncs")


async def test_queue_overflow_drops_and_requests_resync(shared_cluster: Cluster) -> None:
    """A publisher outrunning its queue drops the excess and makes other instances resync."""
    a, _ = await shared_cluster.open("a", publish_queue_max=10)
    b, seen_b = await shared_cluster.open("b")
    await b.subscribe("general")
    for seq in range(1, 1001):
        a.publish(message("general", seq))
    assert a.dropped >= 990
    await eventually(lambda: seen_b.resyncs >= 1, what="resync requested from b")
    await eventually(lambda: len(seen_b.seqs("general")) >= 10, what="queued events at b")
    assert seen_b.seqs("general") == sorted(seen_b.seqs("general"))


async def test_ping_raises_while_redis_is_down(cluster: Cluster, own_redis: RedisServer) -> None:
    """ping answers while Redis is up and raises BrokerUnavailable while it is down."""
    a, _ = await cluster.open("a")
    await a.ping()
    own_redis.kill()
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(a.ping(), 10)
    await asyncio.to_thread(own_redis.start)

    async def ready() -> bool:
        try:
            await a.ping()
        except BrokerUnavailable:
            return False
        return True

    deadline = time.monotonic() + 15
    while not await ready():
        assert time.monotonic() < deadline, "ping still failing after Redis came back"
        await asyncio.sleep(0.1)


async def test_subscribe_and_presence_while_down_do_not_raise(cluster: Cluster,
                                                            own_redis: RedisServer) -> None:
    """subscribe and presence calls return while Redis is down; the room works once it is back."""
    a, _ = await cluster.open("a")
    b, seen_b = await cluster.open("b")
    own_redis.kill()
    await asyncio.wait_for(b.subscribe("general"), 10)
    assert await asyncio.wait_for(b.connection_opened("alice", "c1"), 10) is False
    assert await asyncio.wait_for(b.connection_closed("alice", "c1"), 10) is False
    await asyncio.to_thread(own_redis.start)
    await eventually(lambda: seen_b.resyncs >= 1, what="b resubscribed and resynced")
    await until_delivered(a, seen_b)


async def test_online_users_raises_while_redis_is_down(cluster: Cluster,
                                                      own_redis: RedisServer) -> None:
    """With Redis down, asking who is online raises BrokerUnavailable (the HTTP API's 503),
    except about this instance's own users, and it answers again once Redis is back."""
    a, _ = await cluster.open("a")
    b, _ = await cluster.open("b")
    await b.connection_opened("bob", "c1")
    own_redis.kill()
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(a.online_users(["alice", "bob"]), 10)
    assert await asyncio.wait_for(a.connection_opened("alice", "c2"), 10) is False
    assert await asyncio.wait_for(a.online_users(["alice"]), 10) == {"alice"}  # its own
    await asyncio.to_thread(own_redis.start)  # empty: a restart without persistence
    deadline = time.monotonic() + 15
    while True:
        try:
            online = await a.online_users(["alice", "bob"])
            break
        except BrokerUnavailable:
            assert time.monotonic() < deadline, "online_users still failing after Redis is back"
            await asyncio.sleep(0.1)
    assert "alice" in online  # bob is back at b's next refresh


async def test_crashed_instance_users_are_offline_once_expired(shared_cluster: Cluster) -> None:
    """A crashed instance's users stop counting as online when their entries expire (by
    Redis's clock), even before a sweep has announced them offline."""
    a, _ = await shared_cluster.open("a", presence_ttl=1.0)
    b, _ = await shared_cluster.open("b")  # ttl 30 s: its first sweep is 8 s or more away
    await a.connection_opened("alice", "c1")
    await b.connection_opened("bob", "c2")
    await crash(a)
    assert await b.online_users(["alice", "bob"]) == {"alice", "bob"}
    deadline = time.monotonic() + 10
    while await b.online_users(["alice", "bob"]) != {"bob"}:
        assert time.monotonic() < deadline, "alice still online long after her ttl"
        await asyncio.sleep(0.1)


async def test_crashed_instance_users_go_offline_exactly_once(shared_cluster: Cluster) -> None:
    """A crashed instance's users expire and one `offline` event is published, by one sweeper."""
    a, _ = await shared_cluster.open("a", presence_ttl=1.0)
    b, seen_b = await shared_cluster.open("b", presence_ttl=1.5)
    c, seen_c = await shared_cluster.open("c", presence_ttl=1.5)
    await b.subscribe("general")
    await c.subscribe("general")
    assert await a.connection_opened("alice", "c1") is True
    assert await a.connection_opened("alice", "c2") is False
    assert await b.connection_opened("bob", "c3") is True
    await crash(a)
    await eventually(lambda: presence_of(seen_b, "alice", "offline") >= 1
                     and presence_of(seen_c, "alice", "offline") >= 1,
                     what="alice offline at b and c")
    await asyncio.sleep(2.0)  # several more sweeps on both survivors
    assert presence_of(seen_b, "alice", "offline") == 1
    assert presence_of(seen_c, "alice", "offline") == 1
    assert presence_of(seen_b, "bob", "offline") == 0  # kept alive by b's refresh
    offline = next(e for e in seen_b.events if e.kind == "presence" and e.user == "alice")
    assert offline == presence("alice", "offline", ROOMS)
    # Gone means gone: her next connection anywhere is her first again.
    assert await c.connection_opened("alice", "c4") is True


async def test_close_announces_remaining_users_offline(shared_cluster: Cluster) -> None:
    """Closing an instance removes its connections and announces users left with none."""
    a, _ = await shared_cluster.open("a")
    b, seen_b = await shared_cluster.open("b")
    await b.subscribe("general")
    assert await a.connection_opened("alice", "c1") is True
    assert await b.connection_opened("bob", "c2") is True
    assert await a.connection_opened("bob", "c3") is False
    await a.close()
    await eventually(lambda: presence_of(seen_b, "alice", "offline") == 1, what="alice offline")
    assert presence_of(seen_b, "bob", "offline") == 0
    assert await b.connection_opened("alice", "c4") is True
    assert await b.connection_closed("bob", "c2") is True


async def test_connection_opened_during_outage_is_announced_later(
        cluster: Cluster, own_redis: RedisServer) -> None:
    """A connection opened while Redis was down is announced online once it is back."""
    a, seen_a = await cluster.open("a", presence_ttl=0.6)
    b, _ = await cluster.open("b")
    await a.subscribe("general")  # a's own subscriber sees the announcement synchronously
    own_redis.kill()
    assert await a.connection_opened("alice", "c1") is False
    await asyncio.to_thread(own_redis.start)
    await eventually(lambda: presence_of(seen_a, "alice", "online") == 1, what="alice online")
    assert await b.connection_opened("alice", "c2") is False  # a's connection counts


async def test_clusters_on_different_databases_stay_apart(redis_url: str) -> None:
    """Brokers on different databases of one server never get each other's events."""
    assert redis_url.endswith("/0")
    zero, other = Cluster(redis_url), Cluster(redis_url[:-1] + "1")
    try:
        a, _ = await zero.open("a")
        b, seen_b = await zero.open("b")
        c, seen_c = await other.open("c")
        d, _ = await other.open("d")
        await b.subscribe("general")
        await c.subscribe("general")
        a.publish(message("general", 1))
        a.publish(presence("alice", "online", ROOMS))
        await eventually(lambda: len(seen_b.events) == 2, what="events at b")
        # Redis already handled a's events, so c reads d's marker after anything of a's.
        d.publish(message("general", 99))
        await eventually(lambda: 99 in seen_c.seqs("general"), what="marker at c")
        assert seen_c.events == [message("general", 99)]
        assert await a.connection_opened("alice", "c1") is True
        assert await c.connection_opened("alice", "c2") is True  # separate presence too
    finally:
        for broker in zero.brokers + other.brokers:
            await broker.close()


async def test_a_burst_of_presence_updates_waits_for_connections(shared_cluster: Cluster
                                                                 ) -> None:
    """A thousand connections opening and closing at once (a restart, a storm) are each
    recorded: past the pool's size, callers wait for a connection instead of failing."""
    broker, _ = await shared_cluster.open("burst")
    users = [f"burst{i}" for i in range(1000)]
    opened = await asyncio.gather(*(broker.connection_opened(u, f"c-{u}") for u in users))
    assert all(opened), "every first connection is reported"
    closed = await asyncio.gather(*(broker.connection_closed(u, f"c-{u}") for u in users))
    assert all(closed), "every last connection is reported"
