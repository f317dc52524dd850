"""Streaming messages: live deltas, text so far for joiners, one stored message at the end."""

from __future__ import annotations

from tests.integration.conftest import Chat, ChatFactory


async def test_stream_deltas_fan_out_and_the_end_is_one_stored_message(chat: Chat) -> None:
    """Deltas reach readers live in order; `stream_end` stores the whole text as one message
    that carries the stream id, acknowledged to the streamer."""
    bot, reader_token = await chat.user("bot"), await chat.user("reader")
    await chat.room("general")
    streamer, reader = await chat.ws(bot), await chat.ws(reader_token)
    await reader.join("general")
    started = await streamer.request({"op": "stream_start", "room": "general"}, "ack")
    stream = started["stream"]
    assert (await reader.recv_op("stream_start"))["stream"] == stream
    for piece in ("Hel", "lo ", "**world**"):
        await streamer.send({"op": "stream_delta", "stream": stream, "text": piece})
    deltas = [(await reader.recv_op("stream_delta"))["text"] for _ in range(3)]
    assert deltas == ["Hel", "lo ", "**world**"]
    ack = await streamer.request({"op": "stream_end", "stream": stream}, "ack")
    final = await reader.recv_op("message")
    assert final["seq"] == ack["seq"] == 1 and final["stream"] == stream
    assert final["text"] == "Hello **world**" and "<strong>world</strong>" in final["html"]
    assert "aborted" not in final


async def test_joining_mid_stream_gets_the_text_so_far(chat: Chat) -> None:
    """A connection that joins while a stream runs gets `stream_start` with the text so far."""
    bot, late = await chat.user("bot"), await chat.user("late")
    await chat.room("general")
    streamer = await chat.ws(bot)
    stream = (await streamer.request({"op": "stream_start", "room": "general"}, "ack"))["stream"]
    await streamer.send({"op": "stream_delta", "stream": stream, "text": "partial "})
    await streamer.request({"op": "ping"}, "pong")  # the delta has been processed
    joiner = await chat.ws(late)
    await joiner.join("general")
    snapshot = await joiner.recv_op("stream_start")
    assert snapshot["stream"] == stream and snapshot["text"] == "partial "
    await streamer.send({"op": "stream_delta", "stream": stream, "text": "more"})
    assert (await joiner.recv_op("stream_delta"))["text"] == "more"


async def test_streamer_disconnect_aborts_and_keeps_the_text(chat: Chat) -> None:
    """When the streamer's connection closes, the stream is stored with `aborted: true`."""
    bot, reader_token = await chat.user("bot"), await chat.user("reader")
    await chat.room("general")
    streamer, reader = await chat.ws(bot), await chat.ws(reader_token)
    await reader.join("general")
    stream = (await streamer.request({"op": "stream_start", "room": "general"}, "ack"))["stream"]
    await streamer.send({"op": "stream_delta", "stream": stream, "text": "cut off"})
    await streamer.request({"op": "ping"}, "pong")
    await streamer.close()
    final = await reader.recv_op("message")
    assert final["stream"] == stream and final["aborted"] is True and final["text"] == "cut off"


async def test_idle_stream_is_aborted_after_stream_idle(make_chat: ChatFactory) -> None:
    """A stream with no delta for `limits.stream_idle` seconds is ended with `aborted: true`."""
    chat = await make_chat(stream_idle=0.3)
    bot = await chat.user("bot")
    await chat.room("general")
    streamer = await chat.ws(bot)
    await streamer.join("general")
    stream = (await streamer.request({"op": "stream_start", "room": "general"}, "ack"))["stream"]
    await streamer.send({"op": "stream_delta", "stream": stream, "text": "then silence"})
    final = await streamer.recv_op("message")
    assert final["aborted"] is True and final["text"] == "then silence"
    late = await streamer.request({"op": "stream_delta", "stream": stream, "text": "x"})
    assert late["code"] == "not_found"


async def test_empty_stream_is_discarded_not_stored(chat: Chat) -> None:
    """Ending a stream that never had text stores nothing and tells the room it was dropped."""
    bot = await chat.user("bot")
    await chat.room("general")
    streamer = await chat.ws(bot)
    await streamer.join("general")
    stream = (await streamer.request({"op": "stream_start", "room": "general"}, "ack"))["stream"]
    ack = await streamer.request({"op": "stream_end", "stream": stream}, "ack")
    assert ack["discarded"] is True
    end = await streamer.recv_op("stream_end")
    assert end == {"op": "stream_end", "room": "general", "stream": stream, "discarded": True}
    assert (await streamer.join("general"))["seq"] == 0


async def test_only_the_owner_may_write_and_streams_are_size_limited(
        make_chat: ChatFactory) -> None:
    """Another user's delta is `forbidden`, an unknown stream `not_found`, and a stream may not
    grow past max_message_bytes (`too_large`, the stream stays usable)."""
    chat = await make_chat(max_message_bytes=10)
    owner, other = await chat.ws(await chat.user("bot")), await chat.ws(await chat.user("eve"))
    await chat.room("general")
    stream = (await owner.request({"op": "stream_start", "room": "general"}, "ack"))["stream"]
    hijack = await other.request({"op": "stream_delta", "stream": stream, "text": "x"})
    assert hijack["code"] == "forbidden"
    unknown = await owner.request({"op": "stream_delta", "stream": "nope", "text": "x"})
    assert unknown["code"] == "not_found"
    await owner.send({"op": "stream_delta", "stream": stream, "text": "123456"})
    over = await owner.request({"op": "stream_delta", "stream": stream, "text": "78901"})
    assert over["code"] == "too_large"
    done = await owner.request({"op": "stream_end", "stream": stream}, "ack")
    assert done["seq"] == 1
