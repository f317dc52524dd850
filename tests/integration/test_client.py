"""The Python client: reconnects with backoff and resumes without gap or duplicate."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import pytest

from chatserver.client import (
    AuthenticationFailed,
    ChatClient,
    ChatClientError,
    ConnectionLost,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unreachable,
    http_url,
    reconnect_delay,
    websocket_url,
)
from chatserver.config import RateConfig
from tests.integration.conftest import Chat, ChatFactory, WsClient

FAST = {"backoff_base": 0.05, "going_away_delay": (0.05, 0.1)}


async def _next_messages(client: ChatClient, count: int) -> list[dict[str, object]]:
    got = []
    iterator = client.messages()
    while len(got) < count:
        got.append(await asyncio.wait_for(iterator.__anext__(), 10))
    return got


async def test_client_resumes_after_the_server_closes_its_connection(chat: Chat) -> None:
    """After a 1001 close the client reconnects, re-joins with `after`, and yields the
    messages sent while it was away exactly once, in order."""
    token = await chat.user("alice")
    await chat.room("general")
    url = str(chat.client.make_url("/ws"))
    async with ChatClient(url, token, **FAST) as client:
        await client.join("general")
        first = await client.send("general", "one")
        assert first["seq"] == 1
        assert [m["text"] for m in await _next_messages(client, 1)] == ["one"]
        for session in chat.ctx.connections:
            session.outbox.close(1001, "going away")
        writer = await chat.ws(token)
        for text in ("two", "three"):
            await writer.say("general", text)
        got = await _next_messages(client, 2)
        assert [(m["seq"], m["text"]) for m in got] == [(2, "two"), (3, "three")]
        assert client.reconnects >= 1
        await writer.say("general", "four")
        assert [m["text"] for m in await _next_messages(client, 1)] == ["four"]
        assert await client.ping() < 10


async def test_client_passes_over_a_room_added_frame(chat: Chat) -> None:
    """A `room_added` frame (docs/protocol.md §11: no ref, not of a room's log) is ignored:
    the client goes on yielding messages and answering requests."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    url = str(chat.client.make_url("/ws"))
    async with ChatClient(url, alice) as client:
        await client.join("general")
        opened = await chat.client.post("/api/direct", json={"user": "alice"},
                                        headers=chat.auth(bob))
        assert opened.status == 200
        writer = await chat.ws(bob)
        await writer.say("general", "after the announcement")
        assert [m["text"] for m in await _next_messages(client, 1)] == [
            "after the announcement"]
        assert await client.ping() < 10
        assert client.reconnects == 0


async def test_client_raises_the_servers_error(chat: Chat) -> None:
    """A request answered by an `error` frame raises ChatClientError with its code."""
    token = await chat.user("alice")
    url = str(chat.client.make_url("/ws"))
    async with ChatClient(url, token) as client:
        try:
            await client.join("missing")
        except ChatClientError as error:
            assert error.code == "not_found"
        else:
            raise AssertionError("join of a missing room should fail")


async def test_waiting_for_a_message_with_a_timeout_loses_nothing(chat: Chat) -> None:
    """`wait_for(anext(messages), t)` timing out leaves the iterator working: the message
    sent afterwards still arrives on the same iterator (an async generator would have been
    closed by the cancellation)."""
    token = await chat.user("alice")
    await chat.room("general")
    url = str(chat.client.make_url("/ws"))
    async with ChatClient(url, token, backoff_base=0.05) as client:
        await client.join("general")
        iterator = client.messages()
        for _ in range(3):
            try:
                await asyncio.wait_for(iterator.__anext__(), 0.05)
            except TimeoutError:
                pass
            else:
                raise AssertionError("nothing was sent yet")
        await client.send("general", "late")
        message = await asyncio.wait_for(iterator.__anext__(), 10)
        assert message["text"] == "late"


def test_reconnect_delay_spreads_1001_and_1013_and_honours_retry_after() -> None:
    """After a 1001 or 1013 close the first reconnect waits a random 0.5-5 s; any other drop
    waits a full-jitter exponential backoff; a server's Retry-After is a floor."""
    rng = random.Random(7)
    for code in (1001, 1013):
        delays = [reconnect_delay(0, close_code=code, rng=rng) for _ in range(200)]
        assert all(0.5 <= d <= 5.0 for d in delays) and max(delays) - min(delays) > 3
    dropped = [reconnect_delay(0, base=0.5, close_code=1006, rng=rng) for _ in range(200)]
    assert all(0 <= d <= 0.5 for d in dropped)
    assert all(0 <= reconnect_delay(20, base=0.5, cap=30, rng=rng) <= 30 for _ in range(50))
    assert all(reconnect_delay(0, retry_after=3.0, rng=rng) >= 3.0 for _ in range(50))


def test_server_urls_map_between_http_and_websocket() -> None:
    """An http(s) server URL gets its ws(s) `/ws` URL and back; other schemes are refused."""
    assert websocket_url("http://h:8080") == "ws://h:8080/ws"
    assert websocket_url("https://h/chat/") == "wss://h/chat/ws"
    assert websocket_url("http://h:1/ws") == "ws://h:1/ws"
    assert websocket_url("ws://h:1/ws") == "ws://h:1/ws"
    assert http_url("wss://h/chat/ws") == "https://h/chat"
    with pytest.raises(ValueError, match="ftp://h"):
        websocket_url("ftp://h")


async def test_a_1013_close_reconnects_after_the_spread_delay_and_resumes(chat: Chat) -> None:
    """After a 1013 close the client waits at least the spread delay before reconnecting,
    fails the request in flight with ConnectionLost, and resumes without a gap."""
    token = await chat.user("alice")
    await chat.room("general")
    url = str(chat.client.make_url("/ws"))
    async with ChatClient(url, token, backoff_base=0.01, going_away_delay=(0.3, 0.35)) as client:
        await client.join("general")
        writer = await chat.ws(token)
        closed_at = time.monotonic()
        for session in chat.ctx.connections:
            if session.conn_id == client.hello["conn"]:
                session.outbox.close(1013, "try again later")
        await writer.say("general", "while away")
        message = await asyncio.wait_for(client.messages().__anext__(), 10)
        assert message["text"] == "while away" and client.reconnects == 1
        assert time.monotonic() - closed_at >= 0.3


async def test_refusals_map_to_the_exception_hierarchy(make_chat: ChatFactory) -> None:
    """A refused token (401) raises AuthenticationFailed at once, however long
    connect_timeout allows; a 503 whose Retry-After lies past connect_timeout raises
    Unreachable naming the status, with the hint; `rate_limited` raises RateLimited with
    `retry_after`. All are ChatClientErrors."""
    chat = await make_chat(connections_per_user=1, rate=RateConfig(per_second=0.5, burst=1))
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    url = str(chat.client.make_url("/ws"))
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as refused:
        async with ChatClient(url, "not-a-token", connect_timeout=30):
            pass
    assert refused.value.code == "unauthorized" and "401" in str(refused.value)
    assert isinstance(refused.value, ChatClientError) and time.monotonic() - started < 5
    holder = await chat.ws(alice)  # alice's one allowed connection
    with pytest.raises(Unreachable) as full:
        async with ChatClient(url, alice, connect_timeout=2, backoff_base=0.01):
            pass
    assert "HTTP 503" in str(full.value)
    assert full.value.retry_after is not None and full.value.retry_after >= 5
    await holder.close()
    async with ChatClient(url, bob) as client:
        await client.send("general", "one")
        with pytest.raises(RateLimited) as limited:
            await client.send("general", "two")
    assert isinstance(limited.value, ServerError) and limited.value.code == "rate_limited"
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 2


async def test_an_unreachable_server_fails_within_connect_timeout() -> None:
    """With nothing listening, connect() retries until connect_timeout, then raises
    Unreachable naming the URL."""
    from tests.system.daemon import free_port
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(Unreachable, match=f"ws://127.0.0.1:{url.rsplit(':', 1)[1]}/ws"):
        async with ChatClient(url, "token", connect_timeout=0.5, backoff_base=0.05):
            pass
    assert time.monotonic() - started < 5


async def test_stream_sends_pieces_live_and_stores_one_message(chat: Chat) -> None:
    """Inside `stream()` each write reaches readers at once; leaving the block stores the
    whole text as one message and sets the stream's ack."""
    bot, reader_token = await chat.user("bot"), await chat.user("reader")
    await chat.room("general")
    reader = await chat.ws(reader_token)
    await reader.join("general")
    async with ChatClient(str(chat.client.make_url("/ws")), bot) as client:
        async with client.stream("general") as stream:
            assert (await reader.recv_op("stream_start"))["stream"] == stream.id
            for piece in ("Hel", "lo"):
                await stream.write(piece)
                assert (await reader.recv_op("stream_delta"))["text"] == piece
        assert stream.ack is not None and stream.ack["seq"] == 1 and not stream.discarded
    final = await reader.recv_op("message")
    assert final["text"] == "Hello" and final["stream"] == stream.id and "aborted" not in final


async def _thread_root(chat: Chat) -> tuple[str, WsClient, int]:
    """A bot's token, a reader joined to "general", and the seq of a question posted there."""
    bot, reader_token = await chat.user("bot"), await chat.user("reader")
    await chat.room("general")
    reader = await chat.ws(reader_token)
    await reader.join("general")
    root = (await reader.say("general", "question"))["seq"]
    await reader.recv_op("message")
    return bot, reader, root


async def test_a_stream_may_reply_in_a_thread(chat: Chat) -> None:
    """`stream(room, thread=root)` streams a thread's reply: its `stream_start` and its
    message carry `thread`; a root the server refuses raises before the block runs."""
    bot, reader, root = await _thread_root(chat)
    async with ChatClient(str(chat.client.make_url("/ws")), bot) as client:
        async with client.stream("general", thread=root) as stream:
            assert (await reader.recv_op("stream_start"))["thread"] == root
            await stream.write("answer")
        assert stream.thread == root and stream.ack is not None
        with pytest.raises(NotFound):
            async with client.stream("general", thread=root + 100):
                raise AssertionError("the block runs only once the stream has started")
    final = await reader.recv_op("message")
    assert (final["seq"], final["thread"], final["text"]) == (stream.ack["seq"], root, "answer")


async def test_send_may_reply_in_a_thread(chat: Chat) -> None:
    """`send(room, text, thread=root)` posts a reply: the message carries `thread`; a root
    the server refuses raises with its code."""
    bot, reader, root = await _thread_root(chat)
    async with ChatClient(str(chat.client.make_url("/ws")), bot) as client:
        ack = await client.send("general", "answer", thread=root)
        with pytest.raises(NotFound):
            await client.send("general", "lost", thread=root + 100)
    reply = await reader.recv_op("message")
    assert (reply["seq"], reply["thread"], reply["text"]) == (ack["seq"], root, "answer")


async def test_a_stream_block_that_raises_before_writing_stores_nothing(chat: Chat) -> None:
    """An exception inside `stream()` before any write discards the stream: readers get
    `stream_end` with `discarded`, and nothing is stored."""
    bot, reader_token = await chat.user("bot"), await chat.user("reader")
    await chat.room("general")
    reader = await chat.ws(reader_token)
    await reader.join("general")
    async with ChatClient(str(chat.client.make_url("/ws")), bot) as client:
        with pytest.raises(RuntimeError, match="model failed"):
            async with client.stream("general") as stream:
                raise RuntimeError("model failed")
        assert stream.discarded and stream.ack is None
        assert (await reader.recv_op("stream_end"))["discarded"] is True
        assert (await client.history("general"))["messages"] == []


async def test_a_stream_block_that_raises_after_writing_ends_aborted(chat: Chat) -> None:
    """An exception inside `stream()` after a write leaves the stream to the server: when the
    client closes, the text so far is stored marked `aborted`."""
    bot, reader_token = await chat.user("bot"), await chat.user("reader")
    await chat.room("general")
    reader = await chat.ws(reader_token)
    await reader.join("general")
    async with ChatClient(str(chat.client.make_url("/ws")), bot) as client:
        with pytest.raises(RuntimeError):
            async with client.stream("general") as stream:
                await stream.write("half an ans")
                raise RuntimeError("model failed")
        assert not stream.ended
    final = await reader.recv_op("message")
    assert final["text"] == "half an ans" and final["aborted"] is True


async def test_refused_pieces_raise_and_the_stream_stays_usable(make_chat: ChatFactory
                                                                 ) -> None:
    """A write that would pass max_message_bytes raises TooLarge without sending; a piece
    the server refuses (here: a NUL character) is raised as its ServerError by the next
    call; the stream goes on and stores the accepted pieces."""
    chat = await make_chat(max_message_bytes=10)
    token = await chat.user("bot")
    await chat.room("general")
    async with ChatClient(str(chat.client.make_url("/ws")), token) as client:
        stream = await client.start_stream("general")
        await stream.write("12345")
        with pytest.raises(TooLarge):
            await stream.write("678901")
        await stream.write("\x00")
        await client.ping()  # the refusal has arrived
        with pytest.raises(ServerError) as refused:
            await stream.write("678")
        assert refused.value.code == "bad_request"
        await stream.write("678")
        ack = await stream.end()
        assert ack is not None and ack["seq"] == 1
        page = await client.history("general")
    assert [m["text"] for m in page["messages"]] == ["12345678"]


async def test_history_over_http_pages_and_names_errors(chat: Chat) -> None:
    """`history()` reads pages over HTTP without connecting; a missing room raises NotFound
    (a ServerError) and a bad token AuthenticationFailed."""
    token = await chat.user("alice")
    await chat.room("general")
    writer = await chat.ws(token)
    for i in range(5):
        await writer.say("general", f"m{i}")
    base = str(chat.client.make_url("/"))
    client = ChatClient(base, token)
    try:
        page = await client.history("general", before=5, limit=2)
        assert [m["seq"] for m in page["messages"]] == [3, 4] and page["more"]
        later = await client.history("general", after=3)
        assert [m["text"] for m in later["messages"]] == ["m3", "m4"] and not later["more"]
        with pytest.raises(ServerError) as missing:
            await client.history("nosuch")
        assert missing.value.code == "not_found"
        with pytest.raises(AuthenticationFailed):
            await ChatClient(base, "bad-token").history("general")
    finally:
        await client.close()


async def test_a_truncated_resume_is_completed_from_history(make_chat: ChatFactory) -> None:
    """`join(after=…)` past `replay_max` still yields every missed message once, in order,
    followed by live ones."""
    chat = await make_chat(replay_max=3)
    token = await chat.user("alice")
    await chat.room("general")
    writer = await chat.ws(token)
    for i in range(1, 9):
        await writer.say("general", f"m{i}")
    async with ChatClient(str(chat.client.make_url("/ws")), token) as client:
        joined = await client.join("general", after=1)
        assert joined.get("truncated") is True
        await writer.say("general", "m9")
        got = await _next_messages(client, 8)
    assert [(m["seq"], m["text"]) for m in got] == [(i, f"m{i}") for i in range(2, 10)]


async def test_requests_fail_with_connection_lost_and_messages_end_on_close(chat: Chat
                                                                           ) -> None:
    """After close(), requests raise ConnectionLost and `messages()` ends once drained."""
    token = await chat.user("alice")
    await chat.room("general")
    client = ChatClient(str(chat.client.make_url("/ws")), token)
    await client.connect()
    await client.join("general")
    await client.send("general", "last")
    iterator = client.messages()
    assert (await asyncio.wait_for(iterator.__anext__(), 10))["text"] == "last"
    waiter = asyncio.ensure_future(iterator.__anext__())
    await client.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, 5)
    with pytest.raises(ConnectionLost):
        await client.send("general", "after close")


async def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def _drop(chat: Chat, client: ChatClient) -> None:
    """Close the client's connection from the server's side, as a restart would (1001)."""
    for session in chat.ctx.connections:
        if session.conn_id == client.hello["conn"]:
            session.outbox.close(1001, "going away")


async def test_the_resume_point_follows_edits_deletions_and_reactions(chat: Chat) -> None:
    """`messages()` yields messages only, but edits, deletions and reactions take the room's
    seq and move the client's resume point, live or replayed: after a drop it re-joins with
    `after` = the last event it saw, so the server replays exactly what it missed, and
    `messages()` yields nothing twice and misses nothing."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    writer = await chat.ws(bob)
    hub = chat.ctx.hub
    # Time enough for the writer's ops to land while the client is away.
    away = {"backoff_base": 0.05, "going_away_delay": (0.4, 0.5)}
    async with ChatClient(str(chat.client.make_url("/ws")), alice, **away) as client:
        await client.join("general")
        plan = (await writer.say("general", "plan"))["seq"]
        assert [m["text"] for m in await _next_messages(client, 1)] == ["plan"]
        await writer.request({"op": "edit", "room": "general", "seq": plan,
                              "text": "plan v2"}, "ack")
        await client.request({"op": "react", "room": "general", "seq": plan, "emoji": "👍"})
        await client.ping()  # the edit and the reaction have been read: the last seen is 3
        replayed = hub.replayed
        _drop(chat, client)
        missed = [await writer.request({"op": "edit", "room": "general", "seq": plan,
                                        "text": "plan v3"}, "ack"),
                  await writer.say("general", "draft"),
                  await writer.request({"op": "delete", "room": "general", "seq": plan},
                                       "ack")]
        assert [m["seq"] for m in missed] == [4, 5, 6]
        assert [(m["seq"], m["text"]) for m in await _next_messages(client, 1)] == [
            (5, "draft")]
        await client.ping()  # the replayed deletion has been read too
        assert client.reconnects == 1
        # Resumed after 3: the three missed events, not the edit and reaction it had.
        assert hub.replayed - replayed == len(missed)
        replayed = hub.replayed
        _drop(chat, client)
        later = await writer.say("general", "later")
        assert [(m["seq"], m["text"]) for m in await _next_messages(client, 1)] == [
            (later["seq"], "later")]
        # Resumed after 6, the replayed deletion: only the message sent while away.
        assert client.reconnects == 2 and hub.replayed - replayed == 1
    await writer.close()


async def test_a_truncated_resume_moves_the_resume_point_past_trailing_events(
        make_chat: ChatFactory) -> None:
    """A truncated resume, completed by re-joining where the replay stopped, moves the resume
    point past the events after the last message, so the next resume replays none of them."""
    chat = await make_chat(replay_max=2)
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    writer = await chat.ws(bob)
    plan = (await writer.say("general", "plan"))["seq"]
    for emoji in ("👍", "🎉", "👀"):  # the room's log ends with three events
        await writer.request({"op": "react", "room": "general", "seq": plan, "emoji": emoji},
                             "ack")
    away = {"backoff_base": 0.05, "going_away_delay": (0.2, 0.25)}
    async with ChatClient(str(chat.client.make_url("/ws")), alice, **away) as client:
        assert (await client.join("general", after=0)).get("truncated") is True
        assert [m["text"] for m in await _next_messages(client, 1)] == ["plan"]
        # Two frames replayed by the join, the other two by the client's re-join after 2.
        await _until(lambda: chat.ctx.hub.replayed == 4)
        await client.ping()  # the client has read them
        replayed = chat.ctx.hub.replayed
        _drop(chat, client)
        later = await writer.say("general", "later")
        assert [m["seq"] for m in await _next_messages(client, 1)] == [later["seq"]]
        assert chat.ctx.hub.replayed - replayed == 1  # resumed after 4, the last reaction
    await writer.close()
