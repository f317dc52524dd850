"""`GET /api/rooms/{room}/presence`: who of a room's members is online now (docs/protocol.md §7),
over the in-process server with the memory broker, and once with a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatserver import http_api
from chatserver.config import BrokerConfig
from tests.integration.conftest import Chat, make_config, serve
from tests.integration.helpers import fast_user
from tests.services.redis import RedisServer

WAIT = 5.0  # seconds for the server to notice a closed socket; the checks poll


async def snapshot(chat: Chat, token: str, room: str) -> tuple[int, dict[str, Any]]:
    reply = await chat.client.get(f"/api/rooms/{room}/presence", headers=chat.auth(token))
    body: dict[str, Any] = await reply.json()
    return reply.status, body


async def online(chat: Chat, token: str, room: str) -> list[str]:
    status, body = await snapshot(chat, token, room)
    assert status == 200, body
    names: list[str] = body["online"]
    return names


async def until_online(chat: Chat, token: str, room: str, expected: list[str]) -> None:
    """Poll the snapshot until it lists exactly `expected`; fail after WAIT seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while (got := await online(chat, token, room)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"online {got}, not {expected}"
        await asyncio.sleep(0.02)


async def test_lists_the_connected_members_and_drops_one_who_leaves(chat: Chat) -> None:
    """Both connected members are listed, sorted; after one disconnects only the other is."""
    bob, alice = await fast_user(chat, "bob"), await fast_user(chat, "alice")
    await fast_user(chat, "carol")  # a member who never connects
    await chat.room("team", private=True, members=("alice", "bob", "carol"))
    alice_ws, bob_ws = await chat.ws(alice), await chat.ws(bob)
    await until_online(chat, alice, "team", ["alice", "bob"])
    body = (await snapshot(chat, bob, "team"))[1]
    assert body == {"room": "team", "online": ["alice", "bob"]}  # no "truncated" in a small room
    await bob_ws.close()
    await until_online(chat, alice, "team", ["alice"])
    await alice_ws.close()


async def test_counts_a_user_online_while_any_connection_is_open(chat: Chat) -> None:
    """A user with two connections stays listed until the second one closes too."""
    alice = await fast_user(chat, "alice")
    await chat.room("team", private=True, members=("alice",))
    first, second = await chat.ws(alice), await chat.ws(alice)
    await until_online(chat, alice, "team", ["alice"])
    await first.close()
    await asyncio.sleep(0.1)  # time enough for the server to handle the close
    assert await online(chat, alice, "team") == ["alice"]
    await second.close()
    await until_online(chat, alice, "team", [])


async def test_public_room_lists_only_users_who_joined_it(chat: Chat) -> None:
    """A public room's members are those who joined it; anyone may ask, as for its history."""
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    await chat.room("lobby")
    alice_ws, bob_ws = await chat.ws(alice), await chat.ws(bob)
    assert (await alice_ws.join("lobby"))["op"] == "joined"
    await until_online(chat, bob, "lobby", ["alice"])  # bob is online but never joined
    await alice_ws.close()
    await bob_ws.close()


async def test_non_member_of_a_private_room_is_refused_as_for_history(chat: Chat) -> None:
    """A non-member asking about a private or direct room gets history's 403 forbidden."""
    alice, mallory = await fast_user(chat, "alice"), await fast_user(chat, "mallory")
    await fast_user(chat, "bob")
    await chat.room("secret", private=True, members=("alice",))
    dm = await chat.client.post("/api/direct", json={"user": "bob"}, headers=chat.auth(alice))
    dm_name = (await dm.json())["name"]
    await chat.ws(alice)
    for room in ("secret", dm_name):
        history = await chat.client.get(f"/api/rooms/{room}/messages",
                                        headers=chat.auth(mallory))
        status, body = await snapshot(chat, mallory, room)
        assert (status, body["error"]) == (history.status, (await history.json())["error"])
        assert (status, body["error"]) == (403, "forbidden")
        assert "online" not in body


async def test_unknown_room_is_not_found_and_no_credentials_unauthorized(chat: Chat) -> None:
    """An unknown room answers 404 not_found; a request without credentials 401."""
    alice = await fast_user(chat, "alice")
    status, body = await snapshot(chat, alice, "nowhere")
    assert (status, body["error"]) == (404, "not_found")
    reply = await chat.client.get("/api/rooms/nowhere/presence")
    assert reply.status == 401


async def test_big_room_looks_at_its_first_members_by_name_only(
        chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the member cap, only the first members by name are looked at, and the answer says
    it is truncated (the cap is lowered here to keep the room small)."""
    monkeypatch.setattr(http_api, "PRESENCE_MAX_MEMBERS", 3)
    names = ["ann", "ben", "cat", "dan", "eve"]
    tokens = {name: await fast_user(chat, name) for name in names}
    await chat.room("crowd", private=True, members=tuple(names))
    for name in ("ann", "cat", "dan", "eve"):  # ben stays away
        await chat.ws(tokens[name])
    status, body = await snapshot(chat, tokens["ann"], "crowd")
    assert status == 200, body
    assert body == {"room": "crowd", "online": ["ann", "cat"], "truncated": True}


# -- with Redis --------------------------------------------------------------------------------


@pytest.fixture
async def redis_chat(tmp_path: Path, aiohttp_client: Any, own_redis: RedisServer
                     ) -> AsyncIterator[Chat]:
    """The app under test with the Redis broker instead of the memory one."""
    config = dataclasses.replace(make_config(tmp_path),
                                 broker=BrokerConfig(backend="redis", url=own_redis.url))
    yield await serve(aiohttp_client, config)


async def test_with_redis_lists_members_and_answers_503_while_it_is_down(
        redis_chat: Chat, own_redis: RedisServer) -> None:
    """With the Redis broker the snapshot comes from Redis; while Redis is down it answers 503
    `overloaded` (a guess would show everyone elsewhere offline), and it recovers."""
    chat = redis_chat
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    await chat.room("team", private=True, members=("alice", "bob"))
    await chat.ws(bob)
    await until_online(chat, alice, "team", ["bob"])  # alice has no connection open
    own_redis.kill()
    status, body = await snapshot(chat, alice, "team")
    assert (status, body["error"]) == (503, "overloaded"), body
    await asyncio.to_thread(own_redis.start)
    deadline = asyncio.get_running_loop().time() + 15
    while (status := (await snapshot(chat, alice, "team"))[0]) != 200:
        assert asyncio.get_running_loop().time() < deadline, f"still {status} with Redis back"
        await asyncio.sleep(0.1)
