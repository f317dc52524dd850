"""Every client op of PROTOCOL section 3 and every error code of section 5, over a real socket."""

from __future__ import annotations

import asyncio

from chatserver.config import RateConfig
from tests.integration.conftest import Chat, ChatFactory


async def test_join_unknown_room_is_not_found(chat: Chat) -> None:
    """Joining a room that does not exist answers `not_found` with the ref."""
    ws = await chat.ws(await chat.user("alice"))
    reply = await ws.join("nowhere")
    assert reply["op"] == "error" and reply["code"] == "not_found" and reply["ref"]


async def test_join_after_replays_missed_messages_then_joined(chat: Chat) -> None:
    """`join` with `after` sends every stored message above it in order, then `joined`."""
    token = await chat.user("alice")
    await chat.room("general")
    writer = await chat.ws(token)
    for i in range(5):
        await writer.say("general", f"m{i}")
    reader = await chat.ws(token)
    await reader.send({"op": "join", "room": "general", "after": 2, "ref": "j"})
    frames = [await reader.recv() for _ in range(4)]
    assert [(f["op"], f["seq"]) for f in frames] == [("message", 3), ("message", 4),
                                                      ("message", 5), ("joined", 5)]
    assert frames[-1]["ref"] == "j" and "truncated" not in frames[-1]


async def test_join_after_beyond_replay_max_is_truncated(make_chat: ChatFactory) -> None:
    """More than `replay_max` missed: the first ones are replayed and `joined` says truncated."""
    chat = await make_chat(replay_max=3)
    token = await chat.user("alice")
    await chat.room("general")
    writer = await chat.ws(token)
    for i in range(6):
        await writer.say("general", f"m{i}")
    reader = await chat.ws(token)
    await reader.send({"op": "join", "room": "general", "after": 0})
    frames = [await reader.recv() for _ in range(4)]
    assert [f.get("seq") for f in frames[:3]] == [1, 2, 3]
    assert frames[3]["op"] == "joined" and frames[3]["truncated"] is True
    assert frames[3]["seq"] == 6
    page = await reader.request({"op": "history", "room": "general", "after": 3}, "history")
    assert [m["seq"] for m in page["messages"]] == [4, 5, 6] and page["more"] is False


async def test_leave_stops_delivery(chat: Chat) -> None:
    """After `left`, the connection gets no more frames of that room."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await a.join("general")
    await b.join("general")
    left = await b.request({"op": "leave", "room": "general"}, "left")
    assert left["room"] == "general"
    await a.say("general", "anyone?")
    await b.expect_silence()


async def test_history_pages_backwards_and_forwards(chat: Chat) -> None:
    """`history` returns ascending pages with `more` telling whether the direction continues."""
    token = await chat.user("alice")
    await chat.room("general")
    ws = await chat.ws(token)
    for i in range(7):
        await ws.say("general", f"m{i}")
    latest = await ws.request({"op": "history", "room": "general", "limit": 3}, "history")
    assert [m["seq"] for m in latest["messages"]] == [5, 6, 7] and latest["more"] is True
    older = await ws.request({"op": "history", "room": "general", "before": 5, "limit": 3},
                             "history")
    assert [m["seq"] for m in older["messages"]] == [2, 3, 4] and older["more"] is True
    oldest = await ws.request({"op": "history", "room": "general", "before": 2}, "history")
    assert [m["seq"] for m in oldest["messages"]] == [1] and oldest["more"] is False
    newer = await ws.request({"op": "history", "room": "general", "after": 5}, "history")
    assert [m["seq"] for m in newer["messages"]] == [6, 7] and newer["more"] is False


async def test_send_rate_limit_answers_rate_limited_with_retry_after(
        make_chat: ChatFactory) -> None:
    """Past the user's burst, `send` answers `rate_limited` with a positive `retry_after`."""
    chat = await make_chat(rate=RateConfig(per_second=1, burst=2))
    ws = await chat.ws(await chat.user("alice"))
    await chat.room("general")
    assert (await ws.say("general", "1"))["op"] == "ack"
    assert (await ws.say("general", "2"))["op"] == "ack"
    limited = await ws.say("general", "3")
    assert limited["code"] == "rate_limited" and limited["retry_after"] > 0


async def test_oversized_text_is_too_large_and_nothing_is_stored(make_chat: ChatFactory) -> None:
    """Text over max_message_bytes answers `too_large` and stores nothing."""
    chat = await make_chat(max_message_bytes=100)
    ws = await chat.ws(await chat.user("alice"))
    await chat.room("general")
    reply = await ws.say("general", "x" * 101)
    assert reply["code"] == "too_large"
    assert (await ws.join("general"))["seq"] == 0


async def test_typing_reaches_others_but_not_the_typist(chat: Chat) -> None:
    """`typing` goes to the other users in the room, not back to the typist, and is throttled."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await a.join("general")
    await b.join("general")
    await a.send({"op": "typing", "room": "general"})
    await a.send({"op": "typing", "room": "general"})  # within the interval: dropped
    got = await b.recv_op("typing")
    assert got == {"op": "typing", "room": "general", "user": "alice"}
    await b.expect_silence()
    await a.expect_silence()


async def test_ping_answers_pong_with_ref_and_time(chat: Chat) -> None:
    """`ping` answers `pong` with the same ref and a server timestamp."""
    ws = await chat.ws(await chat.user("alice"))
    pong = await ws.request({"op": "ping"}, "pong")
    assert pong["op"] == "pong" and pong["ts"].endswith("Z")


async def test_presence_announces_first_connection_and_last_disconnect(chat: Chat) -> None:
    """Members of a shared room see a user go online with the first socket, offline with the
    last."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general", members=("alice", "bob"))
    a = await chat.ws(alice)
    await a.join("general")
    b1 = await chat.ws(bob)
    assert await a.recv_op("presence") == {"op": "presence", "user": "bob", "status": "online"}
    b2 = await chat.ws(bob)
    await b1.close()
    await a.expect_silence()
    await b2.close()
    assert (await a.recv_op("presence"))["status"] == "offline"


async def test_store_overload_answers_overloaded_and_acks_nothing(chat: Chat) -> None:
    """While the server refuses new work (shutting down), `send` answers `overloaded`."""
    ws = await chat.ws(await chat.user("alice"))
    await chat.room("general")
    chat.ctx.shutting_down = True
    reply = await ws.say("general", "late")
    chat.ctx.shutting_down = False
    assert reply["code"] == "overloaded"
    assert (await ws.join("general"))["seq"] == 0


async def test_unexpected_failure_answers_internal_and_keeps_the_connection(
        chat: Chat, monkeypatch: object) -> None:
    """A bug inside an op answers `internal` (no exception text) and the socket stays usable."""
    ws = await chat.ws(await chat.user("alice"))
    await chat.room("general")

    async def broken(*args: object) -> None:
        raise RuntimeError("secret detail")

    chat.ctx.rooms.join = broken
    reply = await ws.join("general")
    assert reply["code"] == "internal" and "secret" not in reply["message"]
    assert (await ws.request({"op": "ping"}, "pong"))["op"] == "pong"


async def test_http_post_message_is_delivered_live(chat: Chat) -> None:
    """POST /api/rooms/{room}/messages answers 201 once durable and members get it live."""
    token = await chat.user("alice")
    await chat.room("general")
    ws = await chat.ws(token)
    await ws.join("general")
    resp = await chat.client.post("/api/rooms/general/messages", json={"text": "from a bot"},
                                  headers=chat.auth(token))
    assert resp.status == 201
    body = await resp.json()
    got = await ws.recv_op("message")
    assert (got["seq"], got["id"], got["text"]) == (body["seq"], body["id"], "from a bot")


async def test_rooms_api_lists_creates_and_opens_direct_rooms(chat: Chat) -> None:
    """Rooms can be created, listed with their kind, and a direct room opened idempotently."""
    alice, _ = await chat.user("alice"), await chat.user("bob")
    auth = chat.auth(alice)
    resp = await chat.client.post("/api/rooms", json={"name": "team", "private": True},
                                  headers=auth)
    assert resp.status == 201
    dup = await chat.client.post("/api/rooms", json={"name": "team"}, headers=auth)
    assert dup.status == 409 and (await dup.json())["error"] == "conflict"
    first = await (await chat.client.post("/api/direct", json={"user": "bob"},
                                          headers=auth)).json()
    again = await (await chat.client.post("/api/direct", json={"user": "bob"},
                                          headers=auth)).json()
    assert first["name"] == again["name"] and first["kind"] == "direct"
    assert sorted(first["members"]) == ["alice", "bob"]
    rooms = (await (await chat.client.get("/api/rooms", headers=auth)).json())["rooms"]
    assert {r["name"]: r["kind"] for r in rooms} == {"team": "private",
                                                      first["name"]: "direct"}
    me = await (await chat.client.get("/api/me", headers=auth)).json()
    assert me["name"] == "alice"


async def test_login_sets_cookie_and_is_rate_limited(chat: Chat) -> None:
    """Login returns a token and an HttpOnly SameSite=Strict cookie; bad passwords are 401,
    and repeated attempts are throttled with 429."""
    await chat.user("alice", password="correct horse")
    resp = await chat.client.post("/api/login",
                                  json={"username": "alice", "password": "correct horse"})
    assert resp.status == 200
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert (await resp.json())["user"]["name"] == "alice"
    statuses = []
    for _ in range(12):
        bad = await chat.client.post("/api/login",
                                     json={"username": "alice", "password": "wrong"})
        statuses.append(bad.status)
    assert statuses[0] == 401 and statuses[-1] == 429


async def test_readyz_and_healthz_answer(chat: Chat) -> None:
    """/healthz and /readyz answer 200 on a healthy instance; /readyz 503 once shutting down."""
    assert (await chat.client.get("/healthz")).status == 200
    assert (await chat.client.get("/readyz")).status == 200
    chat.ctx.shutting_down = True
    assert (await chat.client.get("/readyz")).status == 503
    chat.ctx.shutting_down = False


async def test_metrics_export_loop_lag_and_connections(chat: Chat) -> None:
    """/metrics is Prometheus text with the loop-lag histogram and the connection gauge."""
    await chat.ws(await chat.user("alice"))
    await asyncio.sleep(0.25)
    text = await (await chat.client.get("/metrics")).text()
    assert "chat_event_loop_lag_seconds_bucket" in text
    assert "chat_connections 1.0" in text
    assert "chat_store_transactions_total" in text
