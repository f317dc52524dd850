"""The Python client's team features against the in-process server: edit, delete, react,
read positions and search, and `events()` — every room-log frame once, in order, across a
dropped connection and a truncated resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from chatserver.client import (
    ChatClient,
    ChatClientError,
    Event,
    Forbidden,
    NotFound,
    ServerError,
    TooLarge,
)
from tests.integration.conftest import Chat, ChatFactory, WsClient
from tests.integration.helpers import fast_user

# Time enough for a writer's ops to land while the client is away.
AWAY = {"backoff_base": 0.05, "going_away_delay": (0.4, 0.5)}
LONG_AWAY = {"backoff_base": 0.05, "going_away_delay": (1.0, 1.1)}


def _url(chat: Chat) -> str:
    return str(chat.client.make_url("/ws"))


async def _next_events(client: ChatClient, count: int) -> list[Event]:
    iterator = client.events()
    return [await asyncio.wait_for(anext(iterator), 10) for _ in range(count)]


def _drop(chat: Chat, client: ChatClient) -> None:
    """Close the client's connection from the server's side, as a restart would (1001)."""
    for session in chat.ctx.connections:
        if session.conn_id == client.hello["conn"]:
            session.outbox.close(1001, "going away")


async def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def _brief(event: Event) -> tuple[Any, ...]:
    """What a test compares of an event: its op, seq and what it says."""
    if event["op"] == "message":
        return ("message", event["seq"], event["text"])
    if event["op"] == "edited":
        return ("edited", event["seq"], event["target"], event["text"])
    if event["op"] == "deleted":
        return ("deleted", event["seq"], event["target"])
    return ("reaction", event["seq"], event["target"], event["emoji"], event["added"])


async def _edit(writer: WsClient, seq: int, text: str) -> dict[str, Any]:
    return await writer.request({"op": "edit", "room": "general", "seq": seq, "text": text},
                                "ack")


async def test_edit_delete_and_react_are_acked_and_reach_the_room(chat: Chat) -> None:
    """`edit`, `delete` and `react` return their acks once durable (the event's seq and the
    message's `target`; a react that changes nothing has `changed` false and no seq), and
    the room's readers get the events."""
    bot, reader_token = await chat.user("bot"), await chat.user("reader")
    await chat.room("general")
    reader = await chat.ws(reader_token)
    await reader.join("general")
    async with ChatClient(_url(chat), bot) as client:
        status = (await client.send("general", "deploying…"))["seq"]
        edited = await client.edit("general", status, "deployed ✅")
        assert (edited["seq"], edited["target"], edited["room"]) == (2, status, "general")
        added = await client.react("general", status, "✅")
        assert added["changed"] is True and added["seq"] == 3 and added["target"] == status
        again = await client.react("general", status, "✅")
        assert again["changed"] is False and "seq" not in again
        removed = await client.react("general", status, "✅", remove=True)
        assert removed["changed"] is True and removed["seq"] == 4
        gone = await client.delete("general", status)
        assert (gone["seq"], gone["target"]) == (5, status)
        page = await client.history("general")
    frames = [await reader.recv_op(op) for op in
              ("message", "edited", "reaction", "reaction", "deleted")]
    assert [(f["op"], f["seq"]) for f in frames] == [
        ("message", 1), ("edited", 2), ("reaction", 3), ("reaction", 4), ("deleted", 5)]
    assert frames[1]["text"] == "deployed ✅" and frames[1]["user"] == "bot"
    assert [f["added"] for f in frames[2:4]] == [True, False]
    [message] = page["messages"]
    assert message["deleted"] is True and message["text"] == ""
    await reader.close()


async def test_refusals_raise_the_typed_errors(make_chat: ChatFactory) -> None:
    """Someone else's message is Forbidden, an unknown or deleted one NotFound, an edit past
    max_message_bytes TooLarge, a bad emoji a ServerError `bad_request`, and a private room
    the user is not in Forbidden for every op."""
    chat = await make_chat(max_message_bytes=32)
    bot, alice = await chat.user("bot"), await chat.user("alice")
    await chat.room("general")
    await chat.room("secret", private=True, members=("alice",))
    theirs = (await (await chat.ws(alice)).say("general", "alice's"))["seq"]
    async with ChatClient(_url(chat), bot) as client:
        mine = (await client.send("general", "mine"))["seq"]
        with pytest.raises(Forbidden):
            await client.edit("general", theirs, "hijacked")
        with pytest.raises(Forbidden):
            await client.delete("general", theirs)
        with pytest.raises(NotFound):
            await client.edit("general", mine + 100, "nothing there")
        with pytest.raises(TooLarge):
            await client.edit("general", mine, "x" * 33)
        with pytest.raises(ServerError) as bad:
            await client.react("general", mine, "ok")
        assert bad.value.code == "bad_request"
        await client.delete("general", mine)
        with pytest.raises(NotFound):
            await client.edit("general", mine, "too late")
        for call in (client.edit("secret", 1, "x"), client.delete("secret", 1),
                     client.react("secret", 1, "👍"), client.read("secret", 1)):
            with pytest.raises(Forbidden):
                await call
        # The reaction to someone else's message is allowed: any reader may react.
        assert (await client.react("general", theirs, "👍"))["changed"] is True


async def test_read_moves_the_position_forward_only_and_clamps_it(chat: Chat) -> None:
    """`read` returns the position now: clamped to the room's latest seq, and a lower seq
    than the position changes nothing. GET /api/rooms shows it as `read_seq`."""
    bot, alice = await chat.user("bot"), await chat.user("alice")
    await chat.room("general")
    writer = await chat.ws(alice)
    for text in ("one", "two", "three"):
        await writer.say("general", text)
    async with ChatClient(_url(chat), bot) as client:
        assert await client.read("general", 2) == 2
        assert await client.read("general", 1) == 2
        assert await client.read("general", 99) == 3
        with pytest.raises(NotFound):
            await client.read("nosuch", 1)
    listing = await (await chat.client.get("/api/rooms", headers=chat.auth(bot))).json()
    [general] = [room for room in listing["rooms"] if room["name"] == "general"]
    assert general["read_seq"] == 3


async def test_search_pages_over_http_and_names_errors(chat: Chat) -> None:
    """`search()` needs no connect(): typed results (room, seq, thread, user, ts, snippet),
    `room` narrows them, `next` passed as `before` gives the next page; a query the server
    cannot use raises ServerError `bad_request`, a missing room NotFound, a private room the
    user is not in Forbidden."""
    alice = await fast_user(chat, "alice")
    await chat.room("general")
    await chat.room("ops")
    await chat.room("secret", private=True)
    writer = await chat.ws(alice)
    root = (await writer.say("general", "the deploy <failed> & stopped"))["seq"]
    reply = await writer.request({"op": "send", "room": "general", "text": "deploy retried",
                                  "thread": root}, "ack")
    await writer.say("ops", "deploy on ops")
    client = ChatClient(str(chat.client.make_url("/")), alice)
    try:
        everywhere = await client.search("deploy")
        assert {(r["room"], r["seq"]) for r in everywhere["results"]} == {
            ("general", root), ("general", reply["seq"]), ("ops", 1)}
        assert everywhere["next"] is None
        narrowed = await client.search("failed", room="general")
        [hit] = narrowed["results"]
        assert (hit["room"], hit["seq"], hit["thread"], hit["user"]) == (
            "general", root, None, "alice")
        assert "&lt;<mark>failed</mark>&gt; &amp;" in hit["snippet"]
        threaded = await client.search("retried")
        assert threaded["results"][0]["thread"] == root
        first = await client.search("deploy", limit=2)
        assert len(first["results"]) == 2 and first["next"] is not None
        rest = await client.search("deploy", limit=2, before=first["next"])
        assert len(rest["results"]) == 1 and rest["next"] is None
        assert {(r["room"], r["seq"]) for r in first["results"] + rest["results"]} == {
            (r["room"], r["seq"]) for r in everywhere["results"]}
        with pytest.raises(ServerError) as bad:
            await client.search("ab*")
        assert bad.value.code == "bad_request" and "prefix" in str(bad.value)
        with pytest.raises(NotFound):
            await client.search("deploy", room="nosuch")
        with pytest.raises(Forbidden):
            await client.search("deploy", room="secret")
        replies = await client.history("general", thread=root)
        assert [m["seq"] for m in replies["messages"]] == [reply["seq"]]
    finally:
        await client.close()


async def test_events_yields_every_room_log_frame_in_order(chat: Chat) -> None:
    """`events()` yields messages, edits, deletions and reactions, live, in seq order — the
    client's own among them."""
    bot, alice = await chat.user("bot"), await chat.user("alice")
    await chat.room("general")
    writer = await chat.ws(alice)
    async with ChatClient(_url(chat), bot) as client:
        await client.join("general")
        question = (await writer.say("general", "@bot status?"))["seq"]
        await client.react("general", question, "✅")
        await _edit(writer, question, "@bot status, please?")
        answer = (await client.send("general", "all green"))["seq"]
        await writer.request({"op": "delete", "room": "general", "seq": question}, "ack")
        got = await _next_events(client, 5)
    assert [_brief(e) for e in got] == [
        ("message", question, "@bot status?"), ("reaction", 2, question, "✅", True),
        ("edited", 3, question, "@bot status, please?"), ("message", answer, "all green"),
        ("deleted", 5, question)]
    assert got[0]["op"] == "message" and got[0].get("mentions") == ["bot"]


async def test_events_resume_after_a_drop_without_gap_or_duplicate(chat: Chat) -> None:
    """After a dropped connection the client re-joins after the last frame it yielded, so
    `events()` yields exactly the events it missed (the server replays only those), then
    live ones."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    writer = await chat.ws(bob)
    hub = chat.ctx.hub
    async with ChatClient(_url(chat), alice, **AWAY) as client:
        await client.join("general")
        plan = (await writer.say("general", "plan"))["seq"]
        await client.react("general", plan, "👍")
        assert [_brief(e) for e in await _next_events(client, 2)] == [
            ("message", 1, "plan"), ("reaction", 2, plan, "👍", True)]
        replayed = hub.replayed
        _drop(chat, client)
        await _edit(writer, plan, "plan v2")
        await writer.say("general", "draft")
        await writer.request({"op": "react", "room": "general", "seq": plan, "emoji": "👀"},
                             "ack")
        await writer.request({"op": "delete", "room": "general", "seq": plan}, "ack")
        missed = await _next_events(client, 4)
        # A replayed edit carries the message's text now: deleted since, it is "".
        assert [_brief(e) for e in missed] == [
            ("edited", 3, plan, ""), ("message", 4, "draft"),
            ("reaction", 5, plan, "👀", True), ("deleted", 6, plan)]
        assert client.reconnects == 1 and hub.replayed - replayed == 4
        await writer.say("general", "later")
        assert [_brief(e) for e in await _next_events(client, 1)] == [
            ("message", 7, "later")]
    await writer.close()


async def test_a_truncated_resume_delivers_every_event_while_the_room_goes_on(
        make_chat: ChatFactory) -> None:
    """A resume past `replay_max` is completed by re-joining where the replay stopped, not
    from history: `events()` yields every missed event — an edit of a message seen before
    the drop too — and the frames sent while the client completes it, each once, in seq
    order (the room's log has no gaps, so the seqs must run 1, 2, 3…)."""
    chat = await make_chat(replay_max=3)
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    writer = await chat.ws(bob)
    joins = chat.ctx.hub.joins
    async with ChatClient(_url(chat), alice, **LONG_AWAY) as client:
        await client.join("general")
        first = (await writer.say("general", "first"))["seq"]
        await _next_events(client, 1)
        _drop(chat, client)
        for i in range(10):  # 20 frames missed: the resume is truncated several times
            await writer.say("general", f"m{i}")
            await _edit(writer, first, f"first v{i}")
        iterator = client.events()
        got = [await asyncio.wait_for(anext(iterator), 10) for _ in range(5)]
        for i in range(5):  # sent while the client completes the resume
            await writer.request({"op": "react", "room": "general", "seq": first,
                                  "emoji": "👍", "remove": i % 2 == 1}, "ack")
        while len(got) < 25:
            got.append(await asyncio.wait_for(anext(iterator), 10))
        await client.ping()
        assert _nothing_queued(client)
    # The join, the resume after the drop, and the re-joins that completed it.
    assert chat.ctx.hub.joins - joins >= 4
    assert [e["seq"] for e in got] == list(range(2, 27))
    edits = [e for e in got if e["op"] == "edited"]
    assert len(edits) == 10 and all(e["target"] == first for e in edits)
    assert [e["added"] for e in got if e["op"] == "reaction"] == [True, False, True, False,
                                                                    True]
    await writer.close()


def _nothing_queued(client: ChatClient) -> bool:
    """Nothing more is queued for the client's iterators (no duplicate is waiting)."""
    return client._log.empty()


async def test_messages_and_events_are_two_views_a_client_chooses_one_of(chat: Chat) -> None:
    """The first of `messages()` / `events()` called is the client's view; calling the other
    raises ChatClientError `iterator_conflict`. `messages()` skips events queued before it
    was chosen."""
    bot, alice = await chat.user("bot"), await chat.user("alice")
    await chat.room("general")
    writer = await chat.ws(alice)
    async with ChatClient(_url(chat), bot) as client:
        await client.join("general")
        seq = (await writer.say("general", "one"))["seq"]
        await _edit(writer, seq, "one, edited")
        await writer.say("general", "two")
        await client.ping()  # all three are queued, before any view was chosen
        iterator = client.messages()
        with pytest.raises(ChatClientError) as conflict:
            client.events()
        assert conflict.value.code == "iterator_conflict"
        got = [await asyncio.wait_for(anext(iterator), 10) for _ in range(2)]
        assert [m["text"] for m in got] == ["one", "two"]
    async with ChatClient(_url(chat), bot) as client:
        client.events()
        with pytest.raises(ChatClientError, match="events()"):
            client.messages()
