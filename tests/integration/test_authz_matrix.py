"""Authorization: who may do what in public, private and direct rooms, and who may connect.

Users: `owner` and `member` belong to the private room `secret` and share a direct room;
`outsider` belongs to neither; `boss` is an admin who is not a member either (admins may add
members to private rooms, but reading a room takes membership); `guest` is someone to add.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import Chat, WsClient
from tests.integration.helpers import (
    PASSWORD,
    fast_user,
    login,
    next_close,
    own_origin,
    reply_to,
    ws_refused,
)

USERS = ("owner", "member", "outsider", "boss", "guest")
NON_MEMBERS = ("outsider", "boss")  # boss is an admin
QUIET = 0.5  # seconds of listening for frames that must not come


@dataclasses.dataclass
class World:
    chat: Chat
    tokens: dict[str, str]
    dm: str  # the direct room of owner and member

    def room(self, kind: str) -> str:
        return {"public": "lobby", "private": "secret", "direct": self.dm}[kind]

    def auth(self, user: str) -> dict[str, str]:
        return self.chat.auth(self.tokens[user])

    async def ws(self, user: str) -> WsClient:
        return await self.chat.ws(self.tokens[user])


@pytest.fixture
async def world(chat: Chat) -> World:
    tokens = {name: await fast_user(chat, name, admin=name == "boss") for name in USERS}
    await chat.room("lobby")
    await chat.room("secret", private=True, members=("owner", "member"))
    reply = await chat.client.post("/api/direct", json={"user": "member"},
                                   headers=chat.auth(tokens["owner"]))
    assert reply.status == 200, await reply.text()
    body = await reply.json()
    assert body["kind"] == "direct" and sorted(body["members"]) == ["member", "owner"]
    world = World(chat, tokens, body["name"])
    for kind in ("public", "private", "direct"):  # one stored message in each room
        reply = await chat.client.post(f"/api/rooms/{world.room(kind)}/messages",
                                       json={"text": f"first in {kind}"},
                                       headers=world.auth("owner"))
        assert reply.status == 201, await reply.text()
    return world


def expect_forbidden(frame: dict[str, Any]) -> None:
    assert frame["op"] == "error" and frame["code"] == "forbidden", frame


# -- WebSocket ops ---------------------------------------------------------------------------

WsFrame = Callable[[str], dict[str, Any]]
WS_PATHS: dict[str, tuple[WsFrame, str | None]] = {
    "join": (lambda room: {"op": "join", "room": room}, "joined"),
    "join-after": (lambda room: {"op": "join", "room": room, "after": 0}, "joined"),
    "send": (lambda room: {"op": "send", "room": room, "text": "psst"}, "ack"),
    "history": (lambda room: {"op": "history", "room": room}, "history"),
    "typing": (lambda room: {"op": "typing", "room": room}, None),  # no reply on success
    "stream_start": (lambda room: {"op": "stream_start", "room": room}, "ack"),
}


@pytest.mark.parametrize("path", list(WS_PATHS))
async def test_ws_op_is_forbidden_to_non_members_and_allowed_to_members(
        world: World, path: str) -> None:
    """Every WebSocket op on a private or direct room answers a non-member (admins included)
    with `forbidden` and works for a member."""
    build, success = WS_PATHS[path]
    owner, member = await world.ws("owner"), await world.ws("member")
    for kind in ("private", "direct"):
        room = world.room(kind)
        for user in NON_MEMBERS:
            client = await world.ws(user)
            ref = f"{user}-{path}-{kind}"
            await client.send({**build(room), "ref": ref})
            expect_forbidden(await reply_to(client, ref))
            await client.close()

        await owner.join(room)
        ref = f"member-{kind}"
        await member.send({**build(room), "ref": ref})
        if success is None:  # typing: the other member sees it; the typist gets no error
            got = await owner.recv_op("typing")
            assert got == {"op": "typing", "room": room, "user": "member"}
            assert (await member.request({"op": "ping"}))["op"] == "pong"
            continue
        replayed = []
        while True:
            frame = await member.recv()
            if frame.get("ref") == ref:
                break
            if frame["op"] == "message" and frame["room"] == room:
                replayed.append(frame["text"])
        assert frame["op"] == success, frame
        if path == "join-after":
            assert replayed == [f"first in {kind}"] and frame["seq"] == 1
        if path == "history":
            assert [m["text"] for m in frame["messages"]] == [f"first in {kind}"]


async def test_ws_ops_on_a_public_room_are_allowed_to_everyone(world: World) -> None:
    """A public room takes join, send and history from any user, member or not."""
    client = await world.ws("outsider")
    assert (await client.request({"op": "history", "room": "lobby"}))["op"] == "history"
    assert (await client.say("lobby", "hello"))["op"] == "ack"
    assert (await client.join("lobby", after=0))["op"] == "joined"


# -- HTTP --------------------------------------------------------------------------------------

async def http_status(world: World, method: str, path: str, user: str,
                      body: dict[str, Any] | None = None) -> tuple[int, Any]:
    reply = await world.chat.client.request(method, path, json=body, headers=world.auth(user))
    return reply.status, await reply.json()


async def test_http_messages_are_forbidden_to_non_members(world: World) -> None:
    """GET and POST /api/rooms/{room}/messages on a private or direct room answer a non-member
    with 403 forbidden and serve a member."""
    for kind in ("private", "direct"):
        path = f"/api/rooms/{world.room(kind)}/messages"
        for user in NON_MEMBERS:
            for method, body in (("GET", None), ("POST", {"text": "let me in"})):
                status, reply = await http_status(world, method, path, user, body)
                assert (status, reply["error"]) == (403, "forbidden"), (user, method, reply)
                assert isinstance(reply["message"], str) and reply["message"]
        status, reply = await http_status(world, "POST", path, "member", {"text": "by member"})
        assert status == 201 and reply["seq"] == 2
        status, reply = await http_status(world, "GET", path + "?after=0", "member")
        assert status == 200
        assert [m["text"] for m in reply["messages"]] == [f"first in {kind}", "by member"]


async def test_room_listing_shows_private_and_direct_rooms_only_to_members(
        world: World) -> None:
    """GET /api/rooms lists a private or direct room to its members and to nobody else."""
    async def listing(user: str) -> dict[str, dict[str, Any]]:
        status, body = await http_status(world, "GET", "/api/rooms", user)
        assert status == 200
        return {room["name"]: room for room in body["rooms"]}

    for user in ("owner", "member"):
        rooms = await listing(user)
        assert rooms["secret"]["member"] is True and rooms["secret"]["private"] is True
        assert sorted(rooms[world.dm]["members"]) == ["member", "owner"]
    for user in (*NON_MEMBERS, "guest"):
        rooms = await listing(user)
        assert set(rooms) == {"lobby"}, (user, rooms)


async def test_adding_members_is_for_members_and_admins_and_never_to_direct_rooms(
        world: World) -> None:
    """POST /api/rooms/{room}/members: a private room takes new members from its members and
    from admins but not from outsiders; a direct room takes none from anyone."""
    path = "/api/rooms/secret/members"
    status, reply = await http_status(world, "POST", path, "outsider", {"user": "outsider"})
    assert (status, reply["error"]) == (403, "forbidden")
    status, reply = await http_status(world, "POST", path, "outsider", {"user": "guest"})
    assert (status, reply["error"]) == (403, "forbidden")
    status, _ = await http_status(world, "GET", "/api/rooms/secret/messages", "guest")
    assert status == 403

    assert (await http_status(world, "POST", path, "member", {"user": "guest"}))[0] == 201
    assert (await http_status(world, "GET", "/api/rooms/secret/messages", "guest"))[0] == 200
    assert (await http_status(world, "POST", path, "boss", {"user": "boss"}))[0] == 201
    assert (await http_status(world, "GET", "/api/rooms/secret/messages", "boss"))[0] == 200

    for user in ("owner", "member", "outsider", "boss"):
        status, reply = await http_status(world, "POST", f"/api/rooms/{world.dm}/members",
                                          user, {"user": "guest"})
        assert (status, reply["error"]) == (403, "forbidden"), user
    assert (await http_status(world, "GET", f"/api/rooms/{world.dm}/messages", "guest"))[0] == 403


# -- isolation -------------------------------------------------------------------------------

async def test_no_frame_of_a_private_room_reaches_an_outsider(world: World) -> None:
    """While members talk, type, stream and come and go in private and direct rooms, an
    outsider joined to a public room (after being refused the private ones) gets nothing."""
    chat = world.chat
    loner = await fast_user(chat, "loner")  # in the private room only: presence goes there
    await chat.ctx.rooms.add_member("secret", None, "loner")

    outsider = await world.ws("outsider")
    await outsider.join("lobby")
    for frame in ({"op": "join", "room": "secret"}, {"op": "join", "room": world.dm, "after": 0},
                  {"op": "history", "room": "secret"}, {"op": "typing", "room": world.dm}):
        expect_forbidden(await outsider.request(frame))
    await outsider.expect_silence(0.1)

    owner, member = await world.ws("owner"), await world.ws("member")
    for room in ("secret", world.dm):
        await owner.join(room)
        await member.join(room)
    for room in ("secret", world.dm):
        await owner.say(room, f"secret words in {room}")
        await member.send({"op": "typing", "room": room})
        started = await member.request({"op": "stream_start", "room": room}, "ack")
        stream = started["stream"]
        await member.send({"op": "stream_delta", "stream": stream, "text": "token "})
        await member.send({"op": "stream_delta", "stream": stream, "text": "by token"})
        ended = await member.request({"op": "stream_end", "stream": stream}, "ack")
        assert ended["op"] == "ack" and ended["room"] == room
        # An aborted stream: its connection goes away mid-stream.
        quitter = await world.ws("owner")
        aborted = await quitter.request({"op": "stream_start", "room": room}, "ack")
        await quitter.send({"op": "stream_delta", "stream": aborted["stream"], "text": "cut"})
        await quitter.request({"op": "ping"}, "pong")
        await quitter.close()
    # Presence of someone who shares only the private room with the others.
    loner_ws = await chat.ws(loner)
    await loner_ws.join("secret")
    await loner_ws.say("secret", "hi from the loner")
    await loner_ws.close()
    while (await owner.recv_op("presence"))["user"] != "loner":
        pass  # the members do see the loner come and go

    await outsider.expect_silence(QUIET)
    pong = await outsider.request({"op": "ping"})
    assert pong["op"] == "pong"
    await outsider.expect_silence(0.1)
    # ...and it is not deaf: the public room still reaches it.
    guest = await world.ws("guest")
    await guest.say("lobby", "public words")
    got = await outsider.recv_op("message")
    assert got["text"] == "public words"


# -- authentication at the upgrade ---------------------------------------------------------

async def test_upgrade_without_valid_credentials_is_refused_with_401(chat: Chat) -> None:
    """The upgrade is refused with 401 for no credentials, an unknown token, a malformed
    Authorization header, a revoked (logged-out) token and a disabled user."""
    token = await fast_user(chat, "dora")
    assert await ws_refused(chat, {}) == 401
    assert await ws_refused(chat, {"Authorization": "Bearer not-a-real-token"}) == 401
    assert await ws_refused(chat, {"Authorization": f"Basic {token}"}) == 401
    assert await ws_refused(chat, {"Cookie": "chat_session=not-a-real-token"}) == 401

    session = await login(chat, "dora")
    assert (await chat.client.post("/api/logout", headers=chat.auth(session))).status == 200
    assert await ws_refused(chat, chat.auth(session)) == 401

    client = await chat.ws(token)  # the API token still works...
    await client.close()
    await chat.ctx.store.set_disabled("dora", True)  # ...until the user is disabled
    assert await ws_refused(chat, chat.auth(token)) == 401
    reply = await chat.client.get("/api/me", headers=chat.auth(token))
    assert reply.status == 401 and (await reply.json())["error"] == "unauthorized"


async def test_cookie_upgrade_needs_the_servers_own_origin(chat: Chat) -> None:
    """A cookie-authenticated upgrade is refused with 403 from a foreign Origin or with no
    Origin, and accepted from the server's own origin."""
    await fast_user(chat, "erin")
    session = await login(chat, "erin", PASSWORD)
    cookie = {"Cookie": f"chat_session={session}"}
    assert await ws_refused(chat, {**cookie, "Origin": "http://evil.example"}) == 403
    assert await ws_refused(chat, {**cookie, "Origin": own_origin(chat) + ".evil.example"}) == 403
    assert await ws_refused(chat, cookie) == 403
    ws = await chat.client.ws_connect("/ws", headers={**cookie, "Origin": own_origin(chat)})
    hello = await ws.receive_json()
    assert hello["op"] == "hello" and hello["user"] == "erin"
    await ws.close()


async def test_logout_closes_that_sessions_sockets_with_1008_only(chat: Chat) -> None:
    """Logging out closes every socket of that session with 1008 and leaves the sockets of
    the user's other sessions and tokens open."""
    api_token = await fast_user(chat, "fay")
    await chat.room("lobby")
    first, second = await login(chat, "fay"), await login(chat, "fay")
    doomed = [await chat.ws(first), await chat.ws(first)]
    survivors = [await chat.ws(second), await chat.ws(api_token)]
    for client in (*doomed, *survivors):
        await client.join("lobby")

    reply = await chat.client.post("/api/logout", headers={
        "Cookie": f"chat_session={first}", "Origin": own_origin(chat)})
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["closed_connections"] == 2
    codes = await asyncio.gather(*(next_close(client) for client in doomed))
    assert codes == [1008, 1008]
    for client in survivors:
        assert (await client.request({"op": "ping"}))["op"] == "pong"
        assert (await client.say("lobby", "still in"))["op"] == "ack"
    assert await ws_refused(chat, chat.auth(first)) == 401
