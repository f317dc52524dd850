"""`GET /api/search` (docs/protocol.md §10, "Search") over the in-process server: auth, the
query's 400s, permissions as history has them, the result body and the `next` cursor."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Chat
from tests.integration.helpers import fast_user


async def get(chat: Chat, token: str | None, **query: str) -> tuple[int, dict[str, Any]]:
    headers = chat.auth(token) if token else {}
    reply = await chat.client.get("/api/search", params=query, headers=headers)
    body: dict[str, Any] = await reply.json()
    return reply.status, body


async def say(chat: Chat, token: str, room: str, text: str) -> int:
    reply = await chat.client.post(f"/api/rooms/{room}/messages", json={"text": text},
                                   headers=chat.auth(token))
    assert reply.status == 201, await reply.text()
    seq: int = (await reply.json())["seq"]
    return seq


async def test_search_needs_a_login(chat: Chat) -> None:
    """Without credentials the route answers 401 like every other API route."""
    status, body = await get(chat, None, q="anything")
    assert status == 401 and body["error"] == "unauthorized"


async def test_results_carry_room_seq_thread_user_ts_and_a_marked_snippet(chat: Chat) -> None:
    """Each result is {room, seq, thread, user, ts, snippet}, the snippet escaped HTML with the
    match in <mark>; a single page has `next` null."""
    alice = await fast_user(chat, "alice")
    await chat.room("general")
    seq = await say(chat, alice, "general", "the <script> deploy failed")
    status, body = await get(chat, alice, q="deploy")
    assert status == 200, body
    [hit] = body["results"]
    assert {k: hit[k] for k in ("room", "seq", "thread", "user")} == {
        "room": "general", "seq": seq, "thread": None, "user": "alice"}
    assert hit["ts"].endswith("Z")
    assert "&lt;script&gt; <mark>deploy</mark>" in hit["snippet"] and body["next"] is None


async def test_bad_queries_are_400_with_a_reason(chat: Chat) -> None:
    """A missing or wordless query, a too-short prefix, a bad limit or a forged cursor is
    400 bad_request with a message saying what is wrong."""
    alice = await fast_user(chat, "alice")
    cases = [({}, "'q'"), ({"q": "  "}, "'q'"), ({"q": '"" *** !!'}, "no words"),
             ({"q": "ab*"}, "prefix"), ({"q": "x" * 300}, "longer"),
             ({"q": "ok", "limit": "0"}, "limit"), ({"q": "ok", "limit": "51"}, "limit"),
             ({"q": "ok", "limit": "ten"}, "limit"), ({"q": "ok", "before": "garbage"}, "cursor"),
             ({"q": "ok", "before": "WzEsMV0"}, "cursor")]
    for query, reason in cases:
        status, body = await get(chat, alice, **query)
        assert (status, body["error"]) == (400, "bad_request"), query
        assert reason in body["message"], (query, body)


async def test_only_readable_rooms_and_room_filter_errors_like_history(chat: Chat) -> None:
    """Hits come from public rooms and the user's private rooms only; `room` naming a private
    room they are not in is 403 forbidden, an unknown room 404, as for history."""
    alice, bob = await fast_user(chat, "alice"), await fast_user(chat, "bob")
    await chat.room("lobby")
    await chat.room("ours", private=True, members=("alice",))
    await chat.room("bobs", private=True, members=("bob",))
    for room, token in (("lobby", bob), ("ours", alice), ("bobs", bob)):
        await say(chat, token, room, "quarterly numbers")
    status, body = await get(chat, alice, q="quarterly")
    assert status == 200 and sorted(h["room"] for h in body["results"]) == ["lobby", "ours"]
    status, body = await get(chat, alice, q="quarterly", room="bobs")
    history = await chat.client.get("/api/rooms/bobs/messages", headers=chat.auth(alice))
    assert (status, body["error"]) == (history.status, "forbidden") == (403, "forbidden")
    status, body = await get(chat, alice, q="quarterly", room="nowhere")
    assert (status, body["error"]) == (404, "not_found")
    status, body = await get(chat, alice, q="quarterly", room="ours")
    assert status == 200 and [h["room"] for h in body["results"]] == ["ours"]


async def test_next_cursor_pages_through_every_hit_once(chat: Chat) -> None:
    """Passing `next` back as `before` continues the list: every hit once, then `next` null."""
    alice = await fast_user(chat, "alice")
    await chat.room("general")
    seqs = {await say(chat, alice, "general", f"standup note {i}") for i in range(7)}
    seen: list[int] = []
    cursor = ""
    while True:
        status, body = await get(chat, alice, q="standup", limit="3", before=cursor)
        assert status == 200, body
        seen += [h["seq"] for h in body["results"]]
        if body["next"] is None:
            break
        cursor = body["next"]
    assert len(seen) == 7 and set(seen) == seqs
