"""Open sockets whose credentials are gone are closed with 1008 on every instance
(chatserver.credentials, docs/protocol.md §9 "Errors and closing"): a logout at once, through
the broker's `logout` event; a user disabled or a token revoked by another process (the CLI),
or a logout event lost while Redis was down, at the next credential sweep."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from chatserver import credentials
from chatserver.config import BrokerConfig, StoreConfig
from chatserver.tokens import hash_token
from tests.integration.conftest import (
    FRAME_TIMEOUT,
    Chat,
    ChatFactory,
    WsClient,
    make_config,
    serve,
)
from tests.integration.helpers import fast_user, login
from tests.services.postgres import PostgresServer
from tests.services.redis import RedisServer


@dataclasses.dataclass
class Closed:
    """How the server ended a socket, and the text frames it sent before."""

    code: int
    reason: str
    frames: list[dict[str, Any]]

    def texts(self) -> list[str]:
        return [f["text"] for f in self.frames if f["op"] == "message"]


async def closed(client: WsClient, timeout: float = FRAME_TIMEOUT) -> Closed:
    """Read until the server closes the socket."""
    frames: list[dict[str, Any]] = []
    while True:
        msg = await asyncio.wait_for(client.ws.receive(), timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            frames.append(orjson.loads(msg.data))
            continue
        assert msg.type is aiohttp.WSMsgType.CLOSE, (msg.type, msg.data)
        return Closed(msg.data, msg.extra or "", frames)


async def still_open(client: WsClient) -> None:
    """The socket answers a ping: it was left open."""
    assert (await client.request({"op": "ping"}))["op"] == "pong"


# -- the logout event, across instances -------------------------------------------------------

async def test_logout_on_one_instance_closes_the_session_on_the_other(
        redis_pair: tuple[Chat, Chat]) -> None:
    """Two instances on one store and one Redis: alice logs out through the first one's HTTP
    API; her socket of that session on the second is closed with 1008 "session logged out"
    and gets no message sent after the logout, which carol on the second does get; her socket
    of another token stays open. The logout answer counts the first instance's socket only."""
    first, second = redis_pair
    await fast_user(first, "alice")
    api_token, bob, carol = [await fast_user(first, n) for n in ("alice-bot", "bob", "carol")]
    await first.room("lobby")
    session = await login(first, "alice")
    here, there = await first.ws(session), await second.ws(session)
    other_token = await second.ws(api_token)
    b, c = await first.ws(bob), await second.ws(carol)
    for client in (here, there, other_token, b, c):
        await client.join("lobby")
    await b.say("lobby", "before")
    for client in (there, other_token, c):
        assert (await client.recv_op("message"))["text"] == "before"

    reply = await first.client.post("/api/logout", headers=first.auth(session))
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["closed_connections"] == 1
    await b.say("lobby", "after")

    ended = await closed(there)
    assert (ended.code, ended.reason) == (1008, "session logged out")
    assert "after" not in ended.texts()
    assert (await closed(here)).code == 1008
    assert (await c.recv_op("message"))["text"] == "after"  # it did reach the second instance
    assert (await other_token.recv_op("message"))["text"] == "after"
    await still_open(other_token)


# -- the sweep ----------------------------------------------------------------------------------

async def test_one_sweep_closes_disabled_users_and_revoked_tokens(backend_chat: Chat) -> None:
    """Changed in the store behind the server's back, as the CLI does: alice disabled, carol's
    session revoked. One sweep closes alice's two sockets with 1008 "user disabled" and
    carol's revoked session with 1008 "session logged out"; bob's socket and carol's other
    session stay open and keep chatting; a second sweep closes nothing."""
    chat = backend_chat
    alice, bob, _ = [await fast_user(chat, n) for n in ("alice", "bob", "carol")]
    await chat.room("lobby")
    revoked, kept = await login(chat, "carol"), await login(chat, "carol")
    a1, a2, b, c1, c2 = [await chat.ws(t) for t in (alice, alice, bob, revoked, kept)]
    for client in (a1, a2, b, c1, c2):
        await client.join("lobby")

    await chat.ctx.store.set_disabled("alice", True)
    await chat.ctx.store.revoke_token(hash_token(revoked))
    assert await credentials.sweep(chat.ctx.connections, chat.ctx.store) == 3

    for client in (a1, a2):
        ended = await closed(client)
        assert (ended.code, ended.reason) == (1008, "user disabled")
    ended = await closed(c1)
    assert (ended.code, ended.reason) == (1008, "session logged out")
    for client in (b, c2):
        await still_open(client)
    assert (await b.say("lobby", "still here"))["op"] == "ack"
    assert (await c2.recv_op("message"))["text"] == "still here"
    assert await credentials.sweep(chat.ctx.connections, chat.ctx.store) == 0


async def test_a_sweep_past_its_batch_size_checks_every_token(
        chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    """With more distinct tokens open than one store statement takes, the sweep asks in
    batches and still finds each one that is gone."""
    monkeypatch.setattr(credentials, "BATCH_MAX", 2)
    names = ("alice", "bob", "carol", "dave", "erin")
    tokens = [await fast_user(chat, name) for name in names]
    clients = [await chat.ws(token) for token in tokens]
    for name in ("alice", "erin"):
        await chat.ctx.store.set_disabled(name, True)
    assert await credentials.sweep(chat.ctx.connections, chat.ctx.store) == 2
    for client in (clients[0], clients[4]):
        assert (await closed(client)).reason == "user disabled"
    for client in clients[1:4]:
        await still_open(client)


async def test_the_sweep_runs_by_itself_with_the_app(make_chat: ChatFactory,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The app starts the sweep with itself: with a short interval, disabling a user in the
    store closes their socket without anyone asking."""
    monkeypatch.setattr(credentials, "SWEEP_SECONDS", 0.1)
    chat = await make_chat()
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await chat.ctx.store.set_disabled("alice", True)
    ended = await closed(a)
    assert (ended.code, ended.reason) == (1008, "user disabled")
    await still_open(b)


async def test_the_sweep_outlives_a_store_outage(
        private_postgres_server: PostgresServer, make_chat: ChatFactory,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL stops: each sweep logs that it was skipped and the sockets stay open; once
    PostgreSQL is back, the next sweep closes the socket of a user disabled meanwhile."""
    server = private_postgres_server  # asked for first, so the app closes before it stops
    dsn = server.create_database("credentials")
    monkeypatch.setattr(credentials, "SWEEP_SECONDS", 0.1)
    chat = await make_chat(store=StoreConfig(backend="postgres", dsn=dsn, pool_size=2))
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    a, b = await chat.ws(alice), await chat.ws(bob)
    caplog.set_level(logging.WARNING, logger="chatserver.credentials")

    await asyncio.to_thread(server.stop)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while "credential sweep skipped, the store is unavailable" not in caplog.text:
        assert loop.time() < deadline, "no sweep noticed the outage"
        await asyncio.sleep(0.1)
    for client in (a, b):
        await still_open(client)
    await asyncio.to_thread(server.start)
    await chat.ctx.store.set_disabled("alice", True)

    ended = await closed(a, timeout=30)
    assert (ended.code, ended.reason) == (1008, "user disabled")
    await still_open(b)


@pytest.fixture
async def pair_on_own_redis(tmp_path: Path, aiohttp_client: Any,
                            own_redis: RedisServer) -> AsyncIterator[tuple[Chat, Chat]]:
    """Two instances on one store and a Redis of this test alone, which it may stop."""
    config = dataclasses.replace(make_config(tmp_path),
                                 broker=BrokerConfig(backend="redis", url=own_redis.url))
    yield await serve(aiohttp_client, config), await serve(aiohttp_client, config)
    if not own_redis.running:  # the brokers close promptly only with Redis there
        await asyncio.to_thread(own_redis.start)


async def test_a_logout_lost_while_redis_is_down_is_caught_by_the_sweep(
        pair_on_own_redis: tuple[Chat, Chat], own_redis: RedisServer) -> None:
    """Redis is down when alice logs out through the first instance: the logout event never
    reaches the second, where her socket stays open, until that instance's next sweep closes
    it with 1008 "session logged out"."""
    first, second = pair_on_own_redis
    await fast_user(first, "alice")
    session = await login(first, "alice")
    there = await second.ws(session)
    await asyncio.to_thread(own_redis.stop)

    reply = await first.client.post("/api/logout", headers=first.auth(session))
    assert reply.status == 200, await reply.text()
    await still_open(there)
    assert await credentials.sweep(second.ctx.connections, second.ctx.store) == 1
    ended = await closed(there)
    assert (ended.code, ended.reason) == (1008, "session logged out")
