"""The hub recovers from lost broker events by reading the store: no gap reaches a client."""

from __future__ import annotations

from chatserver import protocol
from chatserver.broker.base import Event
from chatserver.store.base import NewMessage
from tests.integration.conftest import Chat


async def _store_unpublished(chat: Chat, room_name: str, text: str) -> int:
    """Append a message the way the server does, but lose its broker event."""
    room = await chat.ctx.rooms.get(room_name)
    user = await chat.ctx.store.get_user("alice")
    assert user is not None
    stored = await chat.ctx.store.append_message(
        NewMessage(room.id, room.name, user.id, user.name, text, f"<p>{text}</p>"))
    return stored.seq


async def test_a_gap_in_live_seqs_is_filled_from_the_store(chat: Chat) -> None:
    """When a live event skips a seq, the reader still gets every message once, in order."""
    token = await chat.user("alice")
    await chat.room("general")
    reader = await chat.ws(token)
    await reader.join("general")
    await _store_unpublished(chat, "general", "lost")
    ack = await reader.say("general", "published")
    got = [await reader.recv_op("message") for _ in range(2)]
    assert [(m["seq"], m["text"]) for m in got] == [(1, "lost"), (2, "published")]
    assert ack["seq"] == 2
    await reader.expect_silence()


async def test_resync_after_a_broker_outage_delivers_what_quiet_rooms_missed(chat: Chat) -> None:
    """After the broker reports lost events, every live room is re-read: a quiet room's
    missed message arrives although no later event reveals the gap."""
    token = await chat.user("alice")
    await chat.room("general")
    await chat.room("quiet")
    a, b = await chat.ws(token), await chat.ws(token)
    await a.join("general")
    await b.join("general")
    await b.join("quiet")
    await _store_unpublished(chat, "general", "g-lost")
    await _store_unpublished(chat, "quiet", "q-lost")
    chat.ctx.hub.resync_all()
    assert (await a.recv_op("message"))["text"] == "g-lost"
    texts = {(await b.recv_op("message"))["text"] for _ in range(2)}
    assert texts == {"g-lost", "q-lost"}
    # Live again afterwards, without duplicates.
    await a.say("general", "after")
    assert (await b.recv_op("message"))["text"] == "after"
    await b.expect_silence()


async def test_duplicate_and_stale_events_are_dropped(chat: Chat) -> None:
    """An event at or below a subscriber's last seq (a broker duplicate) is not delivered."""
    token = await chat.user("alice")
    await chat.room("general")
    reader = await chat.ws(token)
    await reader.join("general")
    ack = await reader.say("general", "once")
    first = await reader.recv_op("message")
    stored = (await chat.ctx.store.messages_after(1, 0, 10))[0]
    chat.ctx.broker.publish(Event("message", "general", protocol.message_frame(stored),
                                  seq=ack["seq"]))
    assert first["seq"] == ack["seq"]
    await reader.expect_silence()
