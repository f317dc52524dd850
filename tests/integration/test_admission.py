"""Admission control: connection caps answer 503 with Retry-After before any upgrade; a
connection may join only so many rooms."""

from __future__ import annotations

import aiohttp
import pytest

from chatserver.overload import Level
from tests.integration.conftest import Chat, ChatFactory


async def _refused(chat: Chat, token: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await chat.client.ws_connect("/ws", headers=chat.auth(token))
    assert refused.value.status == 503
    headers = refused.value.headers
    assert headers is not None and int(headers["Retry-After"]) >= 1


async def test_per_user_connection_cap_answers_503_before_the_upgrade(
        make_chat: ChatFactory) -> None:
    """Past `connections_per_user` a user's next upgrade is refused with 503 and Retry-After,
    while other users still connect."""
    chat = await make_chat(connections_per_user=2)
    alice, bob = await chat.user("alice"), await chat.user("bob")
    first, _second = await chat.ws(alice), await chat.ws(alice)
    await _refused(chat, alice)
    await chat.ws(bob)
    await first.close()
    assert (await chat.ws(alice)).hello["user"] == "alice"


async def test_per_instance_connection_cap_answers_503(make_chat: ChatFactory) -> None:
    """Past `connections_per_instance` every new upgrade is refused with 503 and Retry-After."""
    chat = await make_chat(connections_per_instance=3)
    tokens = [await chat.user(f"u{i}") for i in range(4)]
    for token in tokens[:3]:
        await chat.ws(token)
    await _refused(chat, tokens[3])


async def test_rooms_per_connection_cap(make_chat: ChatFactory) -> None:
    """A connection at `rooms_per_connection` gets `too_large` for another room; re-joining a
    joined room or joining after a leave still works."""
    chat = await make_chat(rooms_per_connection=2)
    ws = await chat.ws(await chat.user("alice"))
    for name in ("a", "b", "c"):
        await chat.room(name)
    await ws.join("a")
    await ws.join("b")
    assert (await ws.join("c"))["code"] == "too_large"
    assert (await ws.join("a"))["op"] == "joined"
    await ws.request({"op": "leave", "room": "a"}, "left")
    assert (await ws.join("c"))["op"] == "joined"


async def test_overload_sheds_typing_then_connections_then_sends(chat: Chat) -> None:
    """Under overload the server sheds in order — typing and presence, then new connections,
    then sends — while messages still flow until the last stage; /metrics shows the level."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await a.join("general")
    await b.join("general")
    guard = chat.ctx.overload
    guard.calm_seconds = 3600  # hold the forced level for the test

    guard.level = Level.SHED_EPHEMERAL
    await a.send({"op": "typing", "room": "general"})
    assert (await a.say("general", "still flows"))["op"] == "ack"
    assert (await b.recv())["op"] == "message", "typing must have been shed"

    guard.level = Level.REFUSE_CONNECTIONS
    await _refused(chat, await chat.user("carol"))
    assert (await a.say("general", "existing sockets still send"))["op"] == "ack"

    guard.level = Level.REFUSE_SENDS
    assert (await a.say("general", "refused"))["code"] == "overloaded"
    metrics = await (await chat.client.get("/metrics")).text()
    assert "chat_overload_level 3.0" in metrics
    assert 'chat_overload_shed_total{what="sends"} 1.0' in metrics
