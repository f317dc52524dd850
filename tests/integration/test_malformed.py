"""Bad input: every malformed frame or body gets a clear error and harms no one, not even the
connection that sent it (except the frames the protocol closes for: oversized, binary, bad
UTF-8)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import Chat, WsClient
from tests.integration.helpers import fast_user, frame_text, next_close, still_works

MAX_MESSAGE = 16384  # limits.max_message_bytes, the default the `chat` fixture runs with
TOO_BIG_TEXT = "x" * (MAX_MESSAGE + 1)
TOO_BIG_UTF8 = "é" * (MAX_MESSAGE // 2 + 1)  # fewer characters than the limit, more bytes


def frame(**fields: Any) -> str:
    return frame_text(fields)


# id, the frame's text, the error code, the ref the error must echo (None: unreadable)
CASES: list[tuple[str, str, str, str | None]] = [
    ("not-json", '{"op": "ping"', "bad_request", None),
    ("empty-frame", "", "bad_request", None),
    ("json-array", '[{"op": "ping", "ref": "a"}]', "bad_request", None),
    ("json-string", '"ping"', "bad_request", None),
    ("json-number", "42", "bad_request", None),
    ("json-null", "null", "bad_request", None),
    ("json-too-deep", "[" * 5000, "bad_request", None),
    ("no-op", frame(ref="r", room="lobby"), "bad_request", "r"),
    ("op-number", frame(op=5, ref="r"), "bad_request", "r"),
    ("op-null", frame(op=None, ref="r"), "bad_request", "r"),
    ("unknown-op", frame(op="dance", ref="r"), "unknown_op", "r"),
    ("unknown-op-case", frame(op="PING", ref="r"), "unknown_op", "r"),
    ("room-int", frame(op="join", room=5, ref="r"), "bad_request", "r"),
    ("room-missing", frame(op="send", text="hi", ref="r"), "bad_request", "r"),
    ("room-invalid", frame(op="join", room="Bad Room!", ref="r"), "bad_request", "r"),
    ("room-too-long", frame(op="join", room="a" * 65, ref="r"), "bad_request", "r"),
    ("room-unknown", frame(op="send", room="nosuch", text="hi", ref="r"), "not_found", "r"),
    ("text-list", frame(op="send", room="lobby", text=["hi"], ref="r"), "bad_request", "r"),
    ("text-missing", frame(op="send", room="lobby", ref="r"), "bad_request", "r"),
    ("text-empty", frame(op="send", room="lobby", text="", ref="r"), "bad_request", "r"),
    ("text-too-large", frame(op="send", room="lobby", text=TOO_BIG_TEXT, ref="r"),
     "too_large", "r"),
    ("text-too-large-utf8", frame(op="send", room="lobby", text=TOO_BIG_UTF8, ref="r"),
     "too_large", "r"),
    ("text-lone-surrogate", '{"op": "send", "room": "lobby", "text": "\\ud800", "ref": "r"}',
     "bad_request", None),
    ("after-string", frame(op="join", room="lobby", after="5", ref="r"), "bad_request", "r"),
    ("after-bool", frame(op="join", room="lobby", after=True, ref="r"), "bad_request", "r"),
    ("after-negative", frame(op="join", room="lobby", after=-1, ref="r"), "bad_request", "r"),
    ("after-float", frame(op="join", room="lobby", after=1.0, ref="r"), "bad_request", "r"),
    ("before-and-after", frame(op="history", room="lobby", before=5, after=1, ref="r"),
     "bad_request", "r"),
    ("limit-0", frame(op="history", room="lobby", limit=0, ref="r"), "bad_request", "r"),
    ("limit-201", frame(op="history", room="lobby", limit=201, ref="r"), "bad_request", "r"),
    ("limit-float", frame(op="history", room="lobby", limit=5.0, ref="r"), "bad_request", "r"),
    ("limit-string", frame(op="history", room="lobby", limit="5", ref="r"),
     "bad_request", "r"),
    ("ref-int", frame(op="ping", ref=5), "bad_request", None),
    ("ref-too-long", frame(op="ping", ref="x" * 65), "bad_request", None),
    ("stream-int", frame(op="stream_delta", stream=5, text="hi", ref="r"), "bad_request", "r"),
    ("stream-unknown", frame(op="stream_end", stream="nosuch", ref="r"), "not_found", "r"),
]


async def lobby_client(chat: Chat, name: str) -> WsClient:
    token = await fast_user(chat, name)
    client = await chat.ws(token)
    await client.join("lobby")
    return client


async def next_error(client: WsClient) -> dict[str, Any]:
    """The next reply (an error frame is expected), skipping presence and room traffic."""
    while True:
        got = await client.recv()
        if got["op"] not in ("presence", "typing", "message"):
            return got


async def check_case(client: WsClient, raw: str, code: str, ref: str | None) -> str | None:
    """None if `raw` got the expected error and the connection still works; else what went
    wrong."""
    await client.send(raw)
    error = await next_error(client)
    if error["op"] != "error" or error["code"] != code or error.get("ref") != ref:
        return f"expected error {code} with ref {ref!r}, got {error}"
    if not isinstance(error["message"], str) or not error["message"]:
        return f"the error has no message: {error}"
    await still_works(client, "lobby")
    return None


async def test_each_malformed_frame_gets_its_error_and_the_connection_keeps_working(
        chat: Chat) -> None:
    """Each malformed frame of the table is answered by one `error` with the matching code and
    the frame's ref when it was readable, and the connection keeps working after each."""
    await chat.room("lobby")
    client = await lobby_client(chat, "mallory")
    problems = []
    for name, raw, code, ref in CASES:
        problem = await check_case(client, raw, code, ref)
        if problem:
            problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("raw", [
    frame(op="join", room="lobby", after=2**64 - 1, ref="r"),
    frame(op="history", room="lobby", before=2**64 - 1, ref="r"),
    frame(op="history", room="lobby", after=2**63, ref="r"),
], ids=["join-after", "history-before", "history-after"])
async def test_seq_beyond_int64_is_a_bad_request(chat: Chat, raw: str) -> None:
    """A seq too big for a 64-bit integer (JSON allows it) is a `bad_request`, not an internal
    error."""
    await chat.room("lobby")
    client = await lobby_client(chat, "mallory")
    assert await check_case(client, raw, "bad_request", "r") is None


async def test_longest_ref_is_echoed(chat: Chat) -> None:
    """A ref of exactly 64 characters is accepted and echoed."""
    await chat.room("lobby")
    client = await lobby_client(chat, "mallory")
    await client.send(frame(op="ping", ref="r" * 64))
    assert (await client.recv_op("pong"))["ref"] == "r" * 64


async def test_frame_over_max_frame_bytes_closes_with_1009(make_chat: Any) -> None:
    """A frame over limits.max_frame_bytes closes that connection with 1009, a frame under it
    with a too-long text gets `too_large`, and other connections carry on."""
    chat = await make_chat(max_frame_bytes=4096, max_message_bytes=1024)
    await chat.room("lobby")
    victim, bystander = await lobby_client(chat, "mallory"), await lobby_client(chat, "bob")
    await victim.send(frame(op="send", room="lobby", text="x" * 2000, ref="big-text"))
    error = await next_error(victim)
    assert (error["code"], error["ref"]) == ("too_large", "big-text")
    await victim.send(frame(op="send", room="lobby", text="x" * 5000, ref="big-frame"))
    assert await next_close(victim) == 1009
    await still_works(bystander, "lobby")
    await still_works(await lobby_client(chat, "carol"), "lobby")


async def test_binary_frame_closes_with_1003(chat: Chat) -> None:
    """A binary frame closes that connection with 1003; other connections carry on."""
    await chat.room("lobby")
    victim, bystander = await lobby_client(chat, "mallory"), await lobby_client(chat, "bob")
    await victim.ws.send_bytes(frame(op="ping", ref="bin").encode())
    assert await next_close(victim) == 1003
    await still_works(bystander, "lobby")


async def test_invalid_utf8_text_frame_fails_the_connection_with_1007(chat: Chat) -> None:
    """A text frame that is not UTF-8 fails that connection with 1007 (RFC 6455 section 8.1);
    other connections carry on and the user can connect again."""
    await chat.room("lobby")
    token = await fast_user(chat, "mallory")
    victim, bystander = await chat.ws(token), await lobby_client(chat, "bob")
    await victim.ws.send_frame(b'{"op": "ping", "ref": "\xff\xfe"}', aiohttp.WSMsgType.TEXT)
    assert await next_close(victim) == 1007
    await still_works(bystander, "lobby")
    again = await chat.ws(token)
    await again.join("lobby")
    await still_works(again, "lobby")


# -- a flood of bad frames ------------------------------------------------------------------

FLOOD = 10_000
FLOOD_WINDOW = 500  # bad frames sent and not yet answered: the test's reading keeps up
FLOOD_KINDS: list[tuple[str, str]] = [
    ('{"op": "send"', "bad_request"),
    ("[]", "bad_request"),
    ("null", "bad_request"),
    (frame(op=7), "bad_request"),
    (frame(op="dance"), "unknown_op"),
    (frame(op="join", room="Bad Room"), "bad_request"),
    (frame(op="send", room="lobby", text=""), "bad_request"),
    (frame(op="history", room="lobby", limit=0), "bad_request"),
    (frame(op="join", room="lobby", after=-1), "bad_request"),
    (frame(op="ping", ref=1), "bad_request"),
    (frame(op="send", room="lobby", text="x" * (MAX_MESSAGE + 1)), "too_large"),
    (frame(op="send", room="nosuch", text="hi"), "not_found"),
    (frame(op="join", room="secret"), "forbidden"),
    (frame(op="stream_delta", stream="nosuch", text="hi"), "not_found"),
]
TICK_TIMEOUT = 10.0  # a generous bound for a message to reach the observer mid-flood


async def test_ten_thousand_bad_frames_harm_no_one(chat: Chat) -> None:
    """Ten thousand bad frames in a row each get their error, in order; afterwards the
    connection still works, and another connection in the same room kept getting messages
    throughout."""
    await chat.room("lobby")
    await chat.room("secret", private=True)
    flooder = await lobby_client(chat, "mallory")
    observer = await lobby_client(chat, "olive")
    chatter = await lobby_client(chat, "chad")

    kinds = list(itertools.islice(itertools.cycle(FLOOD_KINDS), FLOOD))
    codes: list[str] = []
    window = asyncio.Semaphore(FLOOD_WINDOW)
    flood_done = asyncio.Event()

    async def send_flood() -> None:
        for raw, _ in kinds:
            await window.acquire()
            await flooder.ws.send_str(raw)

    async def read_flood() -> None:
        while len(codes) < FLOOD:
            got = await flooder.recv(30)
            if got["op"] == "error":
                codes.append(got["code"])
                window.release()
            else:
                assert got["op"] in ("message", "presence"), got
        flood_done.set()

    delivered: set[str] = set()
    seen_seqs: list[int] = []
    arrived = asyncio.Condition()

    async def observe() -> None:
        while True:
            got = await observer.recv(60)
            if got["op"] == "message":
                async with arrived:
                    delivered.add(got["id"])
                    seen_seqs.append(got["seq"])
                    arrived.notify_all()

    ticks_during_flood = 0

    async def chat_along() -> None:
        nonlocal ticks_during_flood
        n = 0
        while not flood_done.is_set():
            n += 1
            ack = await chatter.say("lobby", f"tick {n}")
            assert ack["op"] == "ack", ack
            tick_id = ack["id"]
            async with arrived:
                await asyncio.wait_for(
                    arrived.wait_for(lambda: tick_id in delivered),  # noqa: B023 (awaited here)
                    TICK_TIMEOUT)
            if not flood_done.is_set():
                ticks_during_flood += 1
            await asyncio.sleep(0.02)

    observing = asyncio.create_task(observe())
    try:
        await asyncio.wait_for(asyncio.gather(send_flood(), read_flood(), chat_along()), 120)
    finally:
        observing.cancel()
    assert codes == [code for _, code in kinds], "errors missing, extra or out of order"
    assert ticks_during_flood >= 3, "the observer got almost nothing while the flood ran"
    assert seen_seqs == list(range(1, len(seen_seqs) + 1)), "the observer missed messages"
    await still_works(flooder, "lobby")
    await still_works(observer, "lobby")


# -- HTTP bodies -----------------------------------------------------------------------------

HTTP_CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    # method, path, request kwargs, status, error code
    ("POST", "/api/rooms/lobby/messages", {"data": b"not json"}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"data": b""}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"json": ["hi"]}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"json": "hi"}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"json": {}}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"json": {"text": 5}}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"json": {"text": None}}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"json": {"text": ""}}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"json": {"text": TOO_BIG_TEXT}}, 413, "too_large"),
    ("POST", "/api/rooms/lobby/messages", {"json": {"text": TOO_BIG_UTF8}}, 413, "too_large"),
    ("POST", "/api/rooms/lobby/messages", {"data": b'{"text": "\\ud800"}'}, 400,
     "bad_request"),
    ("POST", "/api/rooms/lobby/messages", {"data": b"x" * (2 * 1024 * 1024)}, 413,
     "too_large"),
    ("POST", "/api/rooms/nosuch/messages", {"json": {"text": "hi"}}, 404, "not_found"),
    ("POST", "/api/login", {"data": b"nope"}, 400, "bad_request"),
    ("POST", "/api/login", {"json": {"username": 5, "password": "x"}}, 400, "bad_request"),
    ("POST", "/api/login", {"json": {"username": "alice"}}, 400, "bad_request"),
    ("POST", "/api/rooms", {"json": {"name": 7}}, 400, "bad_request"),
    ("POST", "/api/rooms", {"json": {"name": "fine", "private": "yes"}}, 400, "bad_request"),
    ("POST", "/api/rooms", {"json": {"name": "Bad Name"}}, 400, "bad_request"),
    ("POST", "/api/direct", {"json": {}}, 400, "bad_request"),
    ("POST", "/api/direct", {"json": {"user": ["bob"]}}, 400, "bad_request"),
    ("POST", "/api/rooms/lobby/members", {"json": {"user": 1}}, 400, "bad_request"),
    ("GET", "/api/rooms/lobby/messages?limit=abc", {}, 400, "bad_request"),
    ("GET", "/api/rooms/lobby/messages?limit=0", {}, 400, "bad_request"),
    ("GET", "/api/rooms/lobby/messages?limit=201", {}, 400, "bad_request"),
    ("GET", "/api/rooms/lobby/messages?after=-1", {}, 400, "bad_request"),
    ("GET", "/api/rooms/lobby/messages?after=1.5", {}, 400, "bad_request"),
    ("GET", "/api/rooms/lobby/messages?after=99999999999999999999999", {}, 400,
     "bad_request"),
    ("GET", "/api/rooms/lobby/messages?after=1&before=5", {}, 400, "bad_request"),
    ("GET", "/api/rooms/Bad%20Room/messages", {}, 404, "not_found"),
]


async def test_bad_http_bodies_get_json_errors(chat: Chat) -> None:
    """Malformed, mistyped, incomplete or oversized HTTP requests get 400, 404 or 413 with a
    JSON body {"error": code, "message": ...}, and the server keeps serving."""
    token = await fast_user(chat, "mallory")
    await chat.room("lobby")
    problems = []
    for method, path, kwargs, status, code in HTTP_CASES:
        reply = await chat.client.request(method, path, headers=chat.auth(token), **kwargs)
        try:
            body = await reply.json(content_type=None)
        except ValueError:
            body = await reply.text()
        ok = (reply.status == status and isinstance(body, dict) and body.get("error") == code
              and isinstance(body.get("message"), str) and body["message"])
        if not ok:
            problems.append(f"{method} {path} {str(kwargs)[:60]}: expected {status} {code}, "
                            f"got {reply.status} {str(body)[:200]}")
    assert not problems, "\n".join(problems)
    reply = await chat.client.post("/api/rooms/lobby/messages", json={"text": "fine"},
                                   headers=chat.auth(token))
    assert reply.status == 201
