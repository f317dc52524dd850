"""Threads (docs/protocol.md §10, "Threads") over the in-process server: a reply over the
WebSocket or HTTP is live in the room with `thread`, a thread's history pages over both, roots
in history count their replies, bad roots and unreadable rooms are refused, search and
export carry `thread`, and streams reply in threads too."""

from __future__ import annotations

from typing import Any

import orjson

from chatserver import export
from tests.integration.conftest import Chat, WsClient
from tests.integration.helpers import fast_user


async def post(chat: Chat, token: str, room: str, body: dict[str, Any]) -> tuple[int, Any]:
    reply = await chat.client.post(f"/api/rooms/{room}/messages", json=body,
                                   headers=chat.auth(token))
    return reply.status, await reply.json()


async def get(chat: Chat, token: str, room: str, **query: str) -> tuple[int, Any]:
    reply = await chat.client.get(f"/api/rooms/{room}/messages", params=query,
                                  headers=chat.auth(token))
    return reply.status, await reply.json()


async def test_a_reply_reaches_members_live_with_thread_and_history_matches(chat: Chat) -> None:
    """A `send` with `thread` is acked and reaches every member as a `message` carrying
    `thread`; history shows the same frame and the root with `replies` and `last_reply`."""
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await a.join("general")
    await b.join("general")
    root = (await a.say("general", "lunch?"))["seq"]
    await a.recv_op("message")
    await b.recv_op("message")
    ack = await b.request({"op": "send", "room": "general", "text": "yes", "thread": root},
                          "ack")
    assert ack["op"] == "ack", ack
    live = await a.recv_op("message")
    assert (live["seq"], live["thread"], live["text"]) == (ack["seq"], root, "yes")
    history = await a.request({"op": "history", "room": "general"}, "history")
    [root_item, reply_item] = history["messages"]
    assert reply_item == live
    assert (root_item["replies"], root_item["last_reply"]) == (1, ack["seq"])
    assert "thread" not in root_item
    c = await chat.ws(alice)
    await c.send({"op": "join", "room": "general", "after": root})
    assert await c.recv_op("message") == live  # a resume replays the reply as it went live
    for client in (a, b, c):
        await client.close()


async def test_thread_history_pages_replies_over_websocket_and_http(chat: Chat) -> None:
    """`history` with `thread` (op and GET ?thread=) gives only that thread's replies by seq,
    with before/after/limit and `more` as for the room."""
    alice = await fast_user(chat, "alice")
    await chat.room("general")
    _, root = await post(chat, alice, "general", {"text": "root"})
    replies = []
    for n in range(3):
        await post(chat, alice, "general", {"text": f"main {n}"})
        status, body = await post(chat, alice, "general", {"text": f"r{n}", "thread": root["seq"]})
        assert status == 201, body
        replies.append(body["seq"])
    status, body = await get(chat, alice, "general", thread=str(root["seq"]))
    assert status == 200 and [m["seq"] for m in body["messages"]] == replies
    assert all(m["thread"] == root["seq"] for m in body["messages"]) and not body["more"]
    status, body = await get(chat, alice, "general", thread=str(root["seq"]), limit="2")
    assert ([m["seq"] for m in body["messages"]], body["more"]) == (replies[1:], True)
    a = await chat.ws(alice)
    page = await a.request({"op": "history", "room": "general", "thread": root["seq"],
                            "after": replies[0], "limit": 1}, "history")
    assert ([m["text"] for m in page["messages"]], page["more"]) == (["r1"], True)
    await a.close()


async def test_bad_roots_are_refused_and_nothing_is_stored(chat: Chat) -> None:
    """A reply to a reply is bad_request, to an unknown seq not_found, a non-integer thread
    bad_request, over the WebSocket and HTTP alike; none of them takes a seq."""
    alice = await fast_user(chat, "alice")
    await chat.room("general")
    _, root = await post(chat, alice, "general", {"text": "root"})
    _, reply = await post(chat, alice, "general", {"text": "reply", "thread": root["seq"]})
    a = await chat.ws(alice)
    cases = [(reply["seq"], "bad_request", 400), (999, "not_found", 404),
             ("1", "bad_request", 400), (True, "bad_request", 400), (-1, "bad_request", 400)]
    for thread, code, status in cases:
        got = await a.request({"op": "send", "room": "general", "text": "x", "thread": thread})
        assert (got["op"], got["code"]) == ("error", code), (thread, got)
        answer, body = await post(chat, alice, "general", {"text": "x", "thread": thread})
        assert (answer, body["error"]) == (status, code), (thread, body)
    for thread, code in ((reply["seq"], "bad_request"), (999, "not_found")):
        got = await a.request({"op": "history", "room": "general", "thread": thread})
        assert (got["op"], got["code"]) == ("error", code), (thread, got)
    assert (await a.join("general"))["seq"] == reply["seq"]
    await a.close()


async def test_no_thread_reply_is_posted_to_or_read_from_an_unreadable_room(chat: Chat) -> None:
    """An outsider of a private room gets forbidden for a reply and for the thread's history,
    over both transports, and never sees a reply live."""
    alice, eve = await fast_user(chat, "alice"), await fast_user(chat, "eve")
    await chat.room("secret", private=True, members=("alice",))
    _, root = await post(chat, alice, "secret", {"text": "root"})
    e = await chat.ws(eve)
    got = await e.request({"op": "send", "room": "secret", "text": "hi", "thread": root["seq"]})
    assert (got["op"], got["code"]) == ("error", "forbidden")
    got = await e.request({"op": "history", "room": "secret", "thread": root["seq"]})
    assert (got["op"], got["code"]) == ("error", "forbidden")
    status, body = await post(chat, eve, "secret", {"text": "hi", "thread": root["seq"]})
    assert (status, body["error"]) == (403, "forbidden")
    status, body = await get(chat, eve, "secret", thread=str(root["seq"]))
    assert (status, body["error"]) == (403, "forbidden")
    await post(chat, alice, "secret", {"text": "reply", "thread": root["seq"]})
    await e.expect_silence(0.2)
    await e.close()


async def test_search_and_export_carry_the_thread(chat: Chat) -> None:
    """A reply found by search has its root's seq as `thread`; an export line of a reply is
    its history item, `thread` included, and the root's line counts its replies."""
    alice = await fast_user(chat, "alice")
    await chat.room("general")
    _, root = await post(chat, alice, "general", {"text": "release plan"})
    _, reply = await post(chat, alice, "general", {"text": "release tomorrow",
                                                    "thread": root["seq"]})
    found = await chat.client.get("/api/search", params={"q": "release"},
                                  headers=chat.auth(alice))
    threads = {hit["seq"]: hit["thread"] for hit in (await found.json())["results"]}
    assert threads == {root["seq"]: None, reply["seq"]: root["seq"]}
    chunks: list[bytes] = []

    async def write(chunk: bytes) -> None:
        chunks.append(chunk)

    room = await chat.ctx.store.get_room("general")
    assert room is not None
    await export.export_room(chat.ctx.store, room, write)
    lines = [orjson.loads(line) for line in b"".join(chunks).splitlines()]
    _, history = await get(chat, alice, "general")
    assert lines == history["messages"]
    assert (lines[0]["replies"], lines[1]["thread"]) == (1, root["seq"])


async def start_stream(client: WsClient, room: str, thread: object) -> dict[str, Any]:
    """`stream_start` with `thread`: the ack, or the error answering it."""
    return await client.request({"op": "stream_start", "room": room, "thread": thread}, "ack")


async def _stream_in_thread(chat: Chat, question: str
                            ) -> tuple[str, WsClient, WsClient, dict[str, Any], str]:
    """bob asks `question` in "general"; a bot starts a stream answering in its thread.
    bob's token, the bot's and bob's (joined) connections, the root's body, the stream id."""
    bot, bob = await fast_user(chat, "bot"), await fast_user(chat, "bob")
    await chat.room("general")
    _, root = await post(chat, bob, "general", {"text": question})
    streamer, reader = await chat.ws(bot), await chat.ws(bob)
    await reader.join("general")
    stream = (await start_stream(streamer, "general", root["seq"]))["stream"]
    return bob, streamer, reader, root, stream


async def test_a_stream_replies_in_a_thread(backend_chat: Chat) -> None:
    """`stream_start` with `thread`: the room's `stream_start` (live, and a joiner's text so
    far) and the stored message carry `thread`, deltas do not; the thread's history has the
    message and the root counts it."""
    chat = backend_chat
    bob, streamer, reader, root, stream = await _stream_in_thread(chat, "summarise this")
    assert await reader.recv_op("stream_start") == {
        "op": "stream_start", "room": "general", "stream": stream, "user": "bot",
        "thread": root["seq"]}
    await streamer.send({"op": "stream_delta", "stream": stream, "text": "In short"})
    assert "thread" not in await reader.recv_op("stream_delta")
    late = await chat.ws(bob)
    await late.join("general")
    snapshot = await late.recv_op("stream_start")
    assert (snapshot["thread"], snapshot["text"]) == (root["seq"], "In short")
    ack = await streamer.request({"op": "stream_end", "stream": stream}, "ack")
    final = await reader.recv_op("message")
    assert (final["seq"], final["stream"], final["thread"]) == (ack["seq"], stream, root["seq"])
    status, thread = await get(chat, bob, "general", thread=str(root["seq"]))
    assert status == 200 and thread["messages"] == [final]
    _, history = await get(chat, bob, "general")
    assert (history["messages"][0]["replies"], history["messages"][0]["last_reply"]) == (
        1, final["seq"])
    for client in (streamer, reader, late):
        await client.close()


async def test_an_aborted_stream_stays_in_its_thread(backend_chat: Chat) -> None:
    """A thread's stream whose connection closes is stored `aborted` as a reply in that
    thread, and the root counts it."""
    chat = backend_chat
    bob, streamer, reader, root, stream = await _stream_in_thread(chat, "question")
    await streamer.send({"op": "stream_delta", "stream": stream, "text": "half an"})
    await streamer.request({"op": "ping"}, "pong")  # the delta has been taken
    await streamer.close()
    final = await reader.recv_op("message")
    assert (final["aborted"], final["thread"], final["text"]) == (True, root["seq"], "half an")
    _, history = await get(chat, bob, "general")
    assert history["messages"][0]["replies"] == 1
    await reader.close()


async def test_a_stream_to_a_bad_thread_is_refused_and_starts_nothing(backend_chat: Chat
                                                                      ) -> None:
    """`stream_start` with a reply's seq or a thread that is not an integer seq is
    bad_request; with an unknown seq, another room's message or a deleted root not_found:
    no stream starts and the room hears nothing."""
    chat = backend_chat
    bot, bob = await fast_user(chat, "bot"), await fast_user(chat, "bob")
    await chat.room("general")
    await chat.room("other")
    _, root = await post(chat, bob, "general", {"text": "root"})
    _, reply = await post(chat, bob, "general", {"text": "reply", "thread": root["seq"]})
    _, gone = await post(chat, bob, "general", {"text": "doomed"})
    streamer, reader = await chat.ws(bot), await chat.ws(bob)
    deleted = await reader.request({"op": "delete", "room": "general", "seq": gone["seq"]},
                                   "ack")
    elsewhere = 0
    while elsewhere <= deleted["seq"]:  # a seq that exists in "other" only
        elsewhere = (await post(chat, bob, "other", {"text": "elsewhere"}))[1]["seq"]
    await reader.join("general")
    cases = [(reply["seq"], "bad_request"), (999, "not_found"), (elsewhere, "not_found"),
             (gone["seq"], "not_found"), ("1", "bad_request"), (True, "bad_request"),
             (-1, "bad_request")]
    for thread, code in cases:
        got = await start_stream(streamer, "general", thread)
        assert (got["op"], got["code"]) == ("error", code), (thread, got)
    await reader.expect_silence(0.2)
    assert len(chat.ctx.streams) == 0
    for client in (streamer, reader):
        await client.close()


async def test_a_joiner_on_another_instance_gets_the_streams_thread(
        redis_pair: tuple[Chat, Chat]) -> None:
    """With Redis, two instances on one store: a thread's stream started on one is mirrored
    on the other with its `thread`, so a joiner there mid-stream gets it with the text so far."""
    first, second = redis_pair
    bot, bob = await fast_user(first, "bot"), await fast_user(first, "bob")
    await first.room("general")
    _, root = await post(first, bob, "general", {"text": "root"})
    watcher = await second.ws(bob)
    await watcher.join("general")  # the second instance follows the room from now on
    streamer = await first.ws(bot)
    stream = (await start_stream(streamer, "general", root["seq"]))["stream"]
    assert (await watcher.recv_op("stream_start"))["thread"] == root["seq"]
    await streamer.send({"op": "stream_delta", "stream": stream, "text": "so far"})
    await watcher.recv_op("stream_delta")  # the second instance has mirrored it
    late = await second.ws(bob)
    await late.join("general")
    snapshot = await late.recv_op("stream_start")
    assert (snapshot["stream"], snapshot["thread"], snapshot["text"]) == (
        stream, root["seq"], "so far")
    for client in (watcher, streamer, late):
        await client.close()
