"""Production backends for real: several instances on one PostgreSQL and one Redis, and what
happens when an instance, Redis or PostgreSQL fails (issue 3). Every server here is a private
throwaway one that the test may kill or restart."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from chatserver.client import ChatClient, ChatClientError
from tests.services.postgres import PostgresServer
from tests.services.redis import RedisServer
from tests.system.daemon import Daemon, bearer, to_thread

pytestmark = pytest.mark.system

DELIVERY_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this module's own: its tests stop and restart it."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A Redis server of this module's own: its tests kill and restart it."""
    with RedisServer() as server:
        yield server


class Cluster:
    """Daemons sharing one database and one Redis, each in its own directory."""

    def __init__(self, tmp_path: Path, pg: PostgresServer, redis: RedisServer) -> None:
        self.tmp_path = tmp_path
        self.dsn = pg.create_database(f"t{int(time.time() * 1000) % 10**9}")
        self.redis_url = redis.url
        self.daemons: list[Daemon] = []

    def daemon(self, name: str, *, processes: int = 1) -> Daemon:
        directory = self.tmp_path / name
        directory.mkdir()
        daemon = Daemon(directory)
        daemon.config_path.write_text(
            "[server]\n"
            f'host = "127.0.0.1"\nport = {daemon.port}\nprocesses = {processes}\n'
            "shutdown_timeout = 5\n"
            f'[store]\nbackend = "postgres"\ndsn = "{self.dsn}"\npool_size = 4\n'
            f'[broker]\nbackend = "redis"\nurl = "{self.redis_url}"\n'
            "[limits.rate]\nper_second = 1000\nburst = 1000\n"
            '[pools]\nprocesses = 1\n[log]\nlevel = "info"\n')
        self.daemons.append(daemon)
        return daemon

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()


@pytest.fixture
def cluster(tmp_path: Path, pg: PostgresServer, redis: RedisServer) -> Iterator[Cluster]:
    c = Cluster(tmp_path, pg, redis)
    try:
        yield c
    finally:
        c.stop()


async def _collect(client: ChatClient, into: list[dict[str, Any]], stop: asyncio.Event) -> None:
    iterator = client.messages()
    while not stop.is_set():
        try:
            into.append(await asyncio.wait_for(iterator.__anext__(), 0.2))
        except TimeoutError:
            continue


async def _wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _history(daemon: Daemon, token: str, room: str) -> list[dict[str, Any]]:
    async with daemon.http_session() as session:
        return await daemon.history(session, token, room)


def _assert_exactly_history(received: list[dict[str, Any]],
                            history: list[dict[str, Any]]) -> None:
    assert [(m["seq"], m["id"]) for m in received] == [(m["seq"], m["id"]) for m in history]


async def test_kill9_of_an_instance_clients_resume_on_another(cluster: Cluster) -> None:
    """When one of two instances is killed with -9, its clients reconnect to the other and
    resume with join-after: every acked message reaches every client once, in order."""
    a, b = cluster.daemon("a"), cluster.daemon("b")
    await asyncio.gather(to_thread(a.start), to_thread(b.start))
    a.cli_ok("room", "create", "general")
    tokens = a.add_users("sender", *(f"r{i}" for i in range(6)))
    readers = [ChatClient([a.ws_url, b.ws_url] if i < 3 else [b.ws_url, a.ws_url],
                          tokens[f"r{i}"], backoff_base=0.05) for i in range(6)]
    for reader in readers:
        await reader.connect()
        await reader.join("general")
    on_a = [r for r in readers if r.hello["instance"] != readers[-1].hello["instance"]]
    assert len(on_a) == 3, "the first three readers should be on instance a"
    received: list[list[dict[str, Any]]] = [[] for _ in readers]
    stop = asyncio.Event()
    collectors = [asyncio.create_task(_collect(r, into, stop))
                  for r, into in zip(readers, received, strict=True)]
    sender = ChatClient(b.ws_url, tokens["sender"])
    await sender.connect()
    acked = []
    for i in range(150):
        acked.append(await sender.send("general", f"m{i}"))
        if i == 50:
            await to_thread(a.kill, signal.SIGKILL)
    last_seq = acked[-1]["seq"]
    await _wait_until(lambda: all(into and into[-1]["seq"] >= last_seq for into in received),
                      DELIVERY_TIMEOUT, "every reader to get every acked message")
    stop.set()
    await asyncio.gather(*collectors)
    history = await _history(b, tokens["sender"], "general")
    assert [m["seq"] for m in history] == list(range(1, 151))
    for into in received:
        _assert_exactly_history(into, history)
    assert all(r.reconnects >= 1 for r in on_a)
    for client in [*readers, sender]:
        await client.close()


async def test_redis_restart_mid_traffic_loses_no_message_for_any_client(
        cluster: Cluster, redis: RedisServer) -> None:
    """Redis killed and restarted during traffic: instances reconnect and resubscribe by
    themselves, re-read what they missed from the store, and no client sees a gap."""
    a, b = cluster.daemon("a"), cluster.daemon("b")
    await asyncio.gather(to_thread(a.start), to_thread(b.start))
    a.cli_ok("room", "create", "general")
    tokens = a.add_users("sender", "near", "far")
    near, far = ChatClient(a.ws_url, tokens["near"]), ChatClient(b.ws_url, tokens["far"])
    received: dict[str, list[dict[str, Any]]] = {"near": [], "far": []}
    stop = asyncio.Event()
    for client in (near, far):
        await client.connect()
        await client.join("general")
    collectors = [asyncio.create_task(_collect(near, received["near"], stop)),
                  asyncio.create_task(_collect(far, received["far"], stop))]
    sender = ChatClient(a.ws_url, tokens["sender"])
    await sender.connect()
    acked = []
    for i in range(120):
        acked.append(await sender.send("general", f"m{i}"))
        if i == 40:
            await to_thread(redis.kill)
        if i == 70:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{b.base_url}/readyz") as reply:
                    assert reply.status == 503, "readyz must fail while Redis is down"
            await to_thread(redis.start)
    last_seq = acked[-1]["seq"]
    await _wait_until(
        lambda: all(v and v[-1]["seq"] >= last_seq for v in received.values()),
        DELIVERY_TIMEOUT, "both clients to get every acked message after Redis returned")
    stop.set()
    await asyncio.gather(*collectors)
    history = await _history(a, tokens["sender"], "general")
    assert [m["seq"] for m in history] == list(range(1, 121))
    for into in received.values():
        _assert_exactly_history(into, history)
    for client in (near, far, sender):
        await client.close()


async def test_postgres_stopped_sends_are_refused_then_service_resumes(
        cluster: Cluster, pg: PostgresServer) -> None:
    """With PostgreSQL stopped, `send` answers `overloaded` (never an ack) and /readyz is 503;
    when PostgreSQL returns, sends are acknowledged again without restarting chatserver."""
    a = cluster.daemon("a")
    await to_thread(a.start)
    a.cli_ok("room", "create", "general")
    token = a.add_user("alice")
    client = ChatClient(a.ws_url, token)
    await client.connect()
    await client.join("general")
    assert (await client.send("general", "before"))["seq"] == 1
    await to_thread(pg.stop)
    try:
        with pytest.raises(ChatClientError) as refused:
            await client.send("general", "while down")
        assert refused.value.code == "overloaded"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{a.base_url}/readyz") as reply:
                assert reply.status == 503
                assert "store" in (await reply.json())["problems"]
    finally:
        await to_thread(pg.start)
    ack: dict[str, Any] | None = None
    deadline = time.monotonic() + 30
    while ack is None:
        try:
            ack = await client.send("general", "after")
        except ChatClientError as error:
            assert error.code == "overloaded" and time.monotonic() < deadline
            await asyncio.sleep(0.5)
    assert ack["seq"] == 2, "the refused message must not have been stored"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{a.base_url}/readyz") as reply:
            assert reply.status == 200
    await client.close()


async def test_two_processes_share_the_port_and_deliver_across_each_other(
        cluster: Cluster) -> None:
    """`processes = 2` serves one port from two workers joined through Redis: connections
    land on both, every member gets every message, and SIGTERM closes all with 1001 and
    exits 0."""
    a = cluster.daemon("a", processes=2)
    await to_thread(a.start)
    a.cli_ok("room", "create", "general")
    token = a.add_user("alice")
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(a.ws_url, headers=bearer(token)) for _ in range(16)]
        hellos = [orjson.loads((await ws.receive()).data) for ws in sockets]
        assert len({h["instance"] for h in hellos}) == 2, "both workers should take connections"
        for ws in sockets:
            await ws.send_str('{"op":"join","room":"general","ref":"j"}')
            while orjson.loads((await ws.receive()).data)["op"] != "joined":
                pass
        await sockets[0].send_str('{"op":"send","room":"general","text":"hi all","ref":"s"}')
        for ws in sockets:
            while True:
                frame = orjson.loads((await asyncio.wait_for(ws.receive(), 20)).data)
                if frame["op"] == "message":
                    assert frame["text"] == "hi all" and frame["seq"] == 1
                    break
        await to_thread(a.kill, signal.SIGTERM)
        codes = []
        for ws in sockets:
            msg = await asyncio.wait_for(ws.receive(), 20)
            codes.append(ws.close_code if msg.type is not aiohttp.WSMsgType.CLOSE else msg.data)
        assert set(codes) == {1001}
        assert await to_thread(a.wait, 20) == 0


async def test_joining_mid_stream_on_another_instance_gets_the_text_so_far(
        cluster: Cluster) -> None:
    """A stream on instance a is mirrored on instance b: a joiner there gets `stream_start`
    with the text so far, then the later deltas, then the stored message."""
    a, b = cluster.daemon("a"), cluster.daemon("b")
    await asyncio.gather(to_thread(a.start), to_thread(b.start))
    a.cli_ok("room", "create", "general")
    tokens = a.add_users("bot", "watcher", "late")
    async with aiohttp.ClientSession() as http:
        watcher = await http.ws_connect(b.ws_url, headers=bearer(tokens["watcher"]))
        bot = await http.ws_connect(a.ws_url, headers=bearer(tokens["bot"]))

        async def next_op(ws: aiohttp.ClientWebSocketResponse, op: str) -> dict[str, Any]:
            while True:
                frame = orjson.loads((await asyncio.wait_for(ws.receive(), 20)).data)
                if frame["op"] == op:
                    return frame

        await watcher.send_str('{"op":"join","room":"general"}')  # b now mirrors the room
        await next_op(watcher, "joined")
        await bot.send_str('{"op":"stream_start","room":"general","ref":"s"}')
        stream = (await next_op(bot, "ack"))["stream"]
        for piece in ("Once ", "upon "):
            await bot.send_str(orjson.dumps({"op": "stream_delta", "stream": stream,
                                             "text": piece}).decode())
        for _ in range(2):
            await next_op(watcher, "stream_delta")  # b has seen both deltas
        late = await http.ws_connect(b.ws_url, headers=bearer(tokens["late"]))
        await late.send_str('{"op":"join","room":"general"}')
        snapshot = await next_op(late, "stream_start")
        assert snapshot["stream"] == stream and snapshot["text"] == "Once upon "
        await bot.send_str(orjson.dumps({"op": "stream_delta", "stream": stream,
                                         "text": "a time"}).decode())
        assert (await next_op(late, "stream_delta"))["text"] == "a time"
        await bot.send_str(orjson.dumps({"op": "stream_end", "stream": stream}).decode())
        final = await next_op(late, "message")
        assert final["stream"] == stream and final["text"] == "Once upon a time"
        for ws in (watcher, bot, late):
            await ws.close()
