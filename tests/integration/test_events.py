"""Room events (docs/protocol.md §10: "Room events", "Edits and deletions", "Reactions") over
the in-process server: `edit`, `delete` and `react` are acked and live in the room with their
own seqs, history shows the current state, only authors and admins change messages, and a
client that resumes gets the events it missed, in order, then live ones (also across two
instances joined by Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from chatserver.files import directory, file_path
from tests.integration.conftest import Chat, WsClient
from tests.integration.helpers import fast_user


async def edit(ws: WsClient, room: str, seq: int, text: str) -> dict[str, Any]:
    return await ws.request({"op": "edit", "room": room, "seq": seq, "text": text}, "ack")


async def delete(ws: WsClient, room: str, seq: int) -> dict[str, Any]:
    return await ws.request({"op": "delete", "room": room, "seq": seq}, "ack")


async def react(ws: WsClient, room: str, seq: int, emoji: str, remove: bool = False
                ) -> dict[str, Any]:
    return await ws.request({"op": "react", "room": room, "seq": seq, "emoji": emoji,
                             "remove": remove}, "ack")


async def test_ops_are_acked_and_live_in_seq_order_and_history_shows_state(chat: Chat) -> None:
    """Each op is acked with its event's seq and reaches every member as `edited`,
    `reaction` or `deleted` in seq order; an unchanged reaction is acked `changed: false`
    with no frame; history shows the edited text and html, reactions and the deletion."""
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    await chat.room("general")
    a, b, watcher = await chat.ws(alice), await chat.ws(bob), await chat.ws(alice)
    await a.join("general")
    await b.join("general")
    await watcher.join("general")  # reads only: every frame it gets is checked
    first = (await a.say("general", "hello"))["seq"]
    second = (await b.say("general", "bye"))["seq"]
    ack = await edit(a, "general", first, "hello **all**")
    assert (ack["op"], ack["seq"], ack["target"], ack["room"]) == ("ack", 3, first, "general")
    liked = await react(b, "general", first, "👍")
    assert (liked["seq"], liked["changed"]) == (4, True)
    again = await react(b, "general", first, "👍")
    assert again["changed"] is False and "seq" not in again
    gone = await delete(b, "general", second)
    assert gone["seq"] == 5
    frames = [await watcher.recv() for _ in range(5)]
    assert [(f["op"], f["seq"]) for f in frames] == [
        ("message", 1), ("message", 2), ("edited", 3), ("reaction", 4), ("deleted", 5)]
    edited = frames[2]
    assert edited["html"].strip() == "<p>hello <strong>all</strong></p>"
    assert (edited["target"], edited["user"], edited["text"]) == (first, "alice", "hello **all**")
    assert (frames[3]["emoji"], frames[3]["added"], frames[3]["user"]) == ("👍", True, "bob")
    assert (frames[4]["target"], frames[4]["user"]) == (second, "bob")
    await watcher.expect_silence(0.2)
    history = await b.request({"op": "history", "room": "general"}, "history")
    kept, deleted = history["messages"]
    assert (kept["text"], kept["edited"]) == ("hello **all**", edited["edited"])
    assert kept["reactions"] == [{"emoji": "👍", "count": 1, "users": ["bob"]}]
    assert (deleted["text"], deleted["html"], deleted["deleted"]) == ("", "", True)


async def test_permissions_and_bad_input(chat: Chat) -> None:
    """Someone else's message is `forbidden` to edit or delete, an admin may; unknown seqs
    are `not_found`; a non-member of a private room can neither react nor edit; a bad emoji,
    a missing seq or an oversized edit are refused."""
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    root = await fast_user(chat, "root", admin=True)
    await chat.room("general")
    await chat.room("secret", private=True, members=("alice",))
    a, b, r = await chat.ws(alice), await chat.ws(bob), await chat.ws(root)
    seq = (await a.say("general", "mine"))["seq"]
    for reply in (await edit(b, "general", seq, "no"), await delete(b, "general", seq)):
        assert (reply["op"], reply["code"]) == ("error", "forbidden")
    assert (await edit(r, "general", seq, "moderated"))["op"] == "ack"
    assert (await edit(a, "general", 99, "x"))["code"] == "not_found"
    hidden = (await a.say("secret", "private"))["seq"]
    assert (await react(b, "secret", hidden, "👍"))["code"] == "forbidden"
    assert (await edit(b, "secret", hidden, "x"))["code"] == "forbidden"
    for emoji in ("", "a b", "abc", ":Not Short:", "x" * 65):
        assert (await react(a, "general", seq, emoji))["code"] == "bad_request", emoji
    for emoji in ("👍🏽", "👨‍👩‍👧", "1️⃣", ":+1:", "🇫🇷"):
        assert (await react(a, "general", seq, emoji))["op"] == "ack", emoji
    missing = await a.request({"op": "delete", "room": "general"}, "ack")
    assert missing["code"] == "bad_request"
    big = await edit(a, "general", seq, "x" * (chat.ctx.config.limits.max_message_bytes + 1))
    assert big["code"] == "too_large"
    assert (await delete(a, "general", seq))["op"] == "ack"
    assert (await react(a, "general", seq, "👍"))["code"] == "not_found"


async def test_resume_replays_missed_events_in_order_then_live(chat: Chat) -> None:
    """A client that left and rejoins `after` its last seq gets exactly the messages, edits,
    reactions and deletions it missed, in seq order, then `joined`, then live events."""
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await a.join("general")
    first = (await a.say("general", "one"))["seq"]
    last_seen = (await b.join("general"))["seq"]
    await b.close()
    await edit(a, "general", first, "uno")
    await react(a, "general", first, ":tada:")
    doomed = (await a.say("general", "oops"))["seq"]
    await delete(a, "general", doomed)
    await react(a, "general", first, ":tada:", remove=True)
    b = await chat.ws(bob)
    await b.send({"op": "join", "room": "general", "after": last_seen, "ref": "j"})
    frames = [await b.recv() for _ in range(6)]
    assert [(f["op"], f["seq"]) for f in frames] == [
        ("edited", 2), ("reaction", 3), ("message", 4), ("deleted", 5), ("reaction", 6),
        ("joined", 6)]
    assert frames[0]["text"] == "uno" and frames[1]["added"] is True
    assert frames[2]["deleted"] is True and frames[4]["added"] is False
    await react(a, "general", first, "👍")
    live = await b.recv()
    assert (live["op"], live["seq"], live["emoji"]) == ("reaction", 7, "👍")


async def test_deleting_an_uploads_message_removes_its_file(chat: Chat) -> None:
    """Deleting the message that posted a file removes the file: 404 at once, and its bytes
    leave the disk right after the ack."""
    alice = await fast_user(chat, "alice")
    await chat.room("general")
    body = aiohttp.FormData()
    body.add_field("file", b"secret bytes", filename="notes.txt", content_type="text/plain")
    reply = await chat.client.post("/api/rooms/general/files", data=body,
                                   headers=chat.auth(alice))
    posted = await reply.json()
    assert reply.status == 201, posted
    path = file_path(directory(chat.ctx), posted["file"]["id"])
    assert path.exists()
    a = await chat.ws(alice)
    assert (await delete(a, "general", posted["seq"]))["op"] == "ack"
    served = await chat.client.get(posted["file"]["url"], headers=chat.auth(alice))
    assert served.status == 404
    for _ in range(100):  # the bytes go on the thread pool just after the ack
        if not path.exists():
            break
        await asyncio.sleep(0.02)
    assert not path.exists()


async def test_events_cross_instances_through_redis(
    redis_pair: tuple[Chat, Chat],
) -> None:
    """With two instances on one store and Redis, an edit and a reaction made on one reach
    a member on the other, live and in seq order."""
    chat_one, chat_two = redis_pair
    alice, bob = await fast_user(chat_one, "alice"), await fast_user(chat_one, "bob")
    await chat_one.room("general")
    a, b = await chat_one.ws(alice), await chat_two.ws(bob)
    await a.join("general")
    await b.join("general")
    seq = (await a.say("general", "hi"))["seq"]
    await edit(a, "general", seq, "hi *there*")
    await react(a, "general", seq, "👋")
    frames = [await b.recv_op(op) for op in ("message", "edited", "reaction")]
    assert [f["seq"] for f in frames] == [seq, seq + 1, seq + 2]
    assert frames[1]["html"].strip() == "<p>hi <em>there</em></p>"


