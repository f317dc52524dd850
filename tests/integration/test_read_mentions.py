"""Mentions and read positions (docs/protocol.md §10) over the in-process server: mentions in
live frames and history alike, the `read` op and its echo to the user's other connections
only, unread and mention counts in GET /api/rooms, and the permission rules."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Chat
from tests.integration.helpers import fast_user


async def rooms(chat: Chat, token: str) -> dict[str, dict[str, Any]]:
    reply = await chat.client.get("/api/rooms", headers=chat.auth(token))
    assert reply.status == 200, await reply.text()
    return {room["name"]: room for room in (await reply.json())["rooms"]}


async def test_a_mention_is_in_the_live_frame_and_identical_in_history(chat: Chat) -> None:
    """Existing users (sorted) and @room are the frame's mentions; unknown names and names in
    code are not; the html marks the mentions; history and a resumed join give the same."""
    alice = await fast_user(chat, "alice")
    bob = await fast_user(chat, "bob")
    await fast_user(chat, "carol")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await a.join("general")
    await b.join("general")
    await a.say("general", "hi @carol and @bob, not @nobody nor `@alice`; @room")
    live = await b.recv_op("message")
    assert live["mentions"] == ["bob", "carol"] and live["mentions_room"] is True
    assert '<span class="mention">@bob</span>' in live["html"]
    assert "@nobody" in live["html"] and '"mention">@nobody' not in live["html"]
    history = await b.request({"op": "history", "room": "general"}, "history")
    assert history["messages"] == [live]
    c = await chat.ws(bob)
    await c.send({"op": "join", "room": "general", "after": 0})
    assert await c.recv_op("message") == live
    await a.say("general", "plain")
    plain = await b.recv_op("message")
    assert "mentions" not in plain and "mentions_room" not in plain


async def test_read_is_acknowledged_and_reaches_only_the_users_other_connections(
        chat: Chat) -> None:
    """`read` answers {ref, room, seq}; the user's other joined connection gets
    {op: read, room, seq}; the reading connection and other users get nothing; a lower seq
    changes nothing and is not echoed; a seq past the latest is clamped."""
    alice = await fast_user(chat, "alice")
    bob = await fast_user(chat, "bob")
    await chat.room("general")
    a1, a2, b = await chat.ws(alice), await chat.ws(alice), await chat.ws(bob)
    for client in (a1, a2, b):
        await client.join("general")
    for i in range(3):  # over HTTP, so every connection has exactly three frames to read
        posted = await chat.client.post("/api/rooms/general/messages", json={"text": f"m{i}"},
                                        headers=chat.auth(bob))
        assert posted.status == 201
    for client in (a1, a2, b):
        for _ in range(3):
            await client.recv_op("message")
    reply = await a1.request({"op": "read", "room": "general", "seq": 2}, "read")
    assert reply == {"op": "read", "ref": reply["ref"], "room": "general", "seq": 2}
    assert await a2.recv() == {"op": "read", "room": "general", "seq": 2}
    await a1.expect_silence(0.2)
    await b.expect_silence(0.2)
    lower = await a2.request({"op": "read", "room": "general", "seq": 1}, "read")
    assert lower["seq"] == 2
    await a1.expect_silence(0.2)
    clamped = await a2.request({"op": "read", "room": "general", "seq": 10**6}, "read")
    assert clamped["seq"] == 3
    assert await a1.recv() == {"op": "read", "room": "general", "seq": 3}


async def test_api_rooms_counts_unread_and_mentions_until_read(chat: Chat) -> None:
    """GET /api/rooms shows read_seq, unread (others' messages after it) and mentions (of the
    user or @room among them); reading clears them."""
    alice = await fast_user(chat, "alice")
    bob = await fast_user(chat, "bob")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await a.join("general")
    await b.join("general")
    await b.say("general", "hello")
    await b.say("general", "@alice please look")
    await a.say("general", "@room my own")
    last = await b.say("general", "@room deploy at 5")
    before = (await rooms(chat, alice))["general"]
    assert {k: before[k] for k in ("read_seq", "unread", "mentions")} == {
        "read_seq": 0, "unread": 3, "mentions": 2}
    assert "unread_capped" not in before
    assert before["seq"] == last["seq"]  # the counts' snapshot: a client adds what is above
    assert (await rooms(chat, bob))["general"]["mentions"] == 1  # alice's @room
    await a.request({"op": "read", "room": "general", "seq": last["seq"]}, "read")
    after = (await rooms(chat, alice))["general"]
    assert {k: after[k] for k in ("read_seq", "unread", "mentions")} == {
        "read_seq": last["seq"], "unread": 0, "mentions": 0}


async def test_read_checks_the_room_and_the_seq(chat: Chat) -> None:
    """`read` on a private room the user is not in is forbidden, on an unknown room
    not_found, and a missing or negative seq is bad_request."""
    alice = await fast_user(chat, "alice")
    await fast_user(chat, "bob")
    await chat.room("ops", private=True, members=("bob",))
    a = await chat.ws(alice)
    cases = [({"room": "ops", "seq": 1}, "forbidden"), ({"room": "nope", "seq": 1}, "not_found"),
             ({"room": "ops"}, "bad_request"), ({"room": "ops", "seq": -1}, "bad_request")]
    for fields, code in cases:
        reply = await a.request({"op": "read", **fields})
        assert (reply["op"], reply["code"]) == ("error", code), fields


async def test_mentioning_a_non_member_in_a_private_room_tells_them_nothing(
        chat: Chat) -> None:
    """A non-member mentioned in a private room gets no frame, no listing and no count."""
    alice = await fast_user(chat, "alice")
    carol = await fast_user(chat, "carol")
    await chat.room("ops", private=True, members=("alice",))
    await chat.room("general")
    c = await chat.ws(carol)
    await c.join("general")
    a = await chat.ws(alice)
    await a.join("ops")
    await a.say("ops", "@carol is not invited")
    assert (await a.recv_op("message"))["mentions"] == ["carol"]
    await c.expect_silence(0.2)
    listed = await rooms(chat, carol)
    assert "ops" not in listed
    assert all(room["mentions"] == 0 for room in listed.values())


async def test_read_reaches_the_users_connection_on_another_instance(
        redis_pair: tuple[Chat, Chat]) -> None:
    """With Redis, two instances on one store: the reader's other connection on the other
    instance gets the `read` frame; another user's connection there does not."""
    first, second = redis_pair
    alice = await fast_user(first, "alice")
    bob = await fast_user(first, "bob")
    await first.room("general")
    a1, a2, b2 = await first.ws(alice), await second.ws(alice), await second.ws(bob)
    for client in (a1, a2, b2):
        await client.join("general")
    ack = await a1.say("general", "hello")
    for client in (a2, b2):
        await client.recv_op("message")
    await a1.request({"op": "read", "room": "general", "seq": ack["seq"]}, "read")
    assert await a2.recv_op("read") == {"op": "read", "room": "general", "seq": ack["seq"]}
    await b2.expect_silence(0.2)
