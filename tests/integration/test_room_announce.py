"""Room announcements (docs/protocol.md §11): a `room_added` frame reaches the connections of
the users a new room concerns at once, whatever rooms they joined, on every instance; its room
is what GET /api/rooms then lists for that user; nobody else hears of it."""

from __future__ import annotations

from typing import Any

from chatserver.overload import Level
from tests.integration.conftest import Chat, WsClient
from tests.integration.helpers import fast_user

# GET /api/rooms adds these to the room body a `room_added` frame carries.
LISTING_ONLY = {"retention_days", "read_seq", "unread", "mentions", "unread_capped"}


async def post(chat: Chat, token: str, path: str, body: dict[str, Any],
               status: int = 201) -> dict[str, Any]:
    reply = await chat.client.post(path, json=body, headers=chat.auth(token))
    assert reply.status == status, await reply.text()
    answer: dict[str, Any] = await reply.json()
    return answer


async def listed(chat: Chat, token: str, room: str) -> dict[str, Any]:
    """The room as GET /api/rooms lists it for the token's user, without the listing's own
    fields (read counts, retention)."""
    reply = await chat.client.get("/api/rooms", headers=chat.auth(token))
    assert reply.status == 200, await reply.text()
    rooms = {r["name"]: r for r in (await reply.json())["rooms"]}
    return {k: v for k, v in rooms[room].items() if k not in LISTING_ONLY}


async def room_added(client: WsClient) -> dict[str, Any]:
    """The next frame, which must be a `room_added`; its room."""
    frame = await client.recv()
    assert frame["op"] == "room_added" and set(frame) == {"op", "room"}, frame
    room: dict[str, Any] = frame["room"]
    return room


async def test_a_new_direct_room_reaches_both_members_and_no_one_else(chat: Chat) -> None:
    """POST /api/direct that creates the room: alice (joined to nothing) and both of bob's
    connections get the room as the answer shows it, and as GET /api/rooms lists it for
    each; carol gets nothing; opening the same room again announces nothing."""
    alice, bob, carol = [await fast_user(chat, n) for n in ("alice", "bob", "carol")]
    a, b1, b2, c = [await chat.ws(t) for t in (alice, bob, bob, carol)]
    answer = await post(chat, bob, "/api/direct", {"user": "alice"}, 200)
    assert answer["kind"] == "direct" and answer["members"] == ["alice", "bob"]
    for client in (a, b1, b2):
        assert await room_added(client) == answer
    assert answer == await listed(chat, alice, answer["name"])
    assert answer == await listed(chat, bob, answer["name"])
    again = await post(chat, alice, "/api/direct", {"user": "bob"}, 200)
    assert again["name"] == answer["name"]
    for client in (a, b1, b2, c):
        await client.expect_silence(0.2)


async def test_adding_a_member_announces_the_room_to_that_user_only(chat: Chat) -> None:
    """POST /api/rooms/{room}/members: the added user gets the room with its latest seq and
    `member` true, equal to their listing; the adder and others get nothing; adding a
    member again announces nothing."""
    alice, bob, carol = [await fast_user(chat, n) for n in ("alice", "bob", "carol")]
    await chat.room("team", private=True, members=("bob",))
    for text in ("one", "two"):
        await post(chat, bob, "/api/rooms/team/messages", {"text": text})
    a, b, c = [await chat.ws(t) for t in (alice, bob, carol)]
    await post(chat, bob, "/api/rooms/team/members", {"user": "alice"})
    got = await room_added(a)
    assert got == {"name": "team", "kind": "private", "private": True, "member": True,
                   "seq": 2}
    assert got == await listed(chat, alice, "team")
    await post(chat, bob, "/api/rooms/team/members", {"user": "alice"})
    for client in (a, b, c):
        await client.expect_silence(0.2)


async def test_a_public_room_reaches_everyone_a_private_one_only_its_creator(
        chat: Chat) -> None:
    """POST /api/rooms: a public room reaches every connected user, `member` true for the
    creator's connections only; a private room reaches only the creator's connections. Each
    equals the recipient's listing."""
    alice, bob, carol = [await fast_user(chat, n) for n in ("alice", "bob", "carol")]
    a, b, c1, c2 = [await chat.ws(t) for t in (alice, bob, carol, carol)]
    answer = await post(chat, carol, "/api/rooms", {"name": "lobby"})
    for client in (c1, c2):
        assert await room_added(client) == answer
    assert answer["member"] is True and answer == await listed(chat, carol, "lobby")
    for client, token in ((a, alice), (b, bob)):
        got = await room_added(client)
        assert got == {**answer, "member": False} == await listed(chat, token, "lobby")
    answer = await post(chat, carol, "/api/rooms", {"name": "hideout", "private": True})
    for client in (c1, c2):
        assert await room_added(client) == answer == await listed(chat, carol, "hideout")
    for client in (a, b, c1, c2):
        await client.expect_silence(0.2)


async def test_a_failed_request_announces_nothing(chat: Chat) -> None:
    """A taken room name, a direct room with oneself, adding to a private room one is not a
    member of: refused, and no frame goes anywhere."""
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    await chat.room("taken")
    await chat.room("secret", private=True)
    a, b = await chat.ws(alice), await chat.ws(bob)
    await post(chat, alice, "/api/rooms", {"name": "taken"}, 409)
    await post(chat, alice, "/api/direct", {"user": "alice"}, 400)
    await post(chat, alice, "/api/rooms/secret/members", {"user": "bob"}, 403)
    for client in (a, b):
        await client.expect_silence(0.2)


async def test_announcements_are_not_shed_under_overload(chat: Chat) -> None:
    """At the overload level that sheds typing and presence, `room_added` still goes out."""
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    a = await chat.ws(alice)
    guard = chat.ctx.overload
    guard.calm_seconds = 3600  # hold the forced level for the test
    guard.level = Level.SHED_EPHEMERAL
    answer = await post(chat, bob, "/api/direct", {"user": "alice"}, 200)
    assert await room_added(a) == answer


async def test_a_direct_room_opened_on_one_instance_reaches_the_other(
        redis_pair: tuple[Chat, Chat]) -> None:
    """Two instances on one store and one Redis: bob opens a DM through the first; alice's
    connections on both instances get it, carol's on the second does not; a public room
    created through the second reaches the first."""
    first, second = redis_pair
    alice, bob, carol = [await fast_user(first, n) for n in ("alice", "bob", "carol")]
    a1, a2, c2 = await first.ws(alice), await second.ws(alice), await second.ws(carol)
    answer = await post(first, bob, "/api/direct", {"user": "alice"}, 200)
    assert await room_added(a2) == answer
    assert await room_added(a1) == answer
    assert answer == await listed(second, alice, answer["name"])
    await c2.expect_silence(0.3)
    lobby = await post(second, carol, "/api/rooms", {"name": "lobby"})
    assert await room_added(c2) == lobby
    for client in (a1, a2):
        assert await room_added(client) == {**lobby, "member": False}
