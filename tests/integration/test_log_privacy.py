"""No message text, password or token ever reaches the log: a whole chat session, logged at
DEBUG in every format, is searched for each secret it used."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import pytest

from chatserver.log import JsonFormatter, TextFormatter

from .conftest import Chat

WAIT = 10.0


def _secret(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(8)}"


def _everything_logged(records: list[logging.LogRecord]) -> list[str]:
    """Each record as every format writes it, plus its raw parts (fields included)."""
    json, text = JsonFormatter(), TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = []
    for record in records:
        out += [json.format(record), text.format(record), repr(record.args), str(record.msg)]
    return out


async def _closed_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith("connection closed")]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} 'connection closed' lines:\n{caplog.text}")


async def test_no_message_text_password_or_token_is_ever_logged(
        chat: Chat, caplog: pytest.LogCaptureFixture) -> None:
    """Log in (right and wrong password), connect by token and by session, send, post, stream
    and abort a stream, send malformed and refused frames, disconnect: no record at DEBUG
    holds a message's text, a password or a token, in text, JSON or its raw arguments."""
    caplog.set_level(logging.DEBUG)
    password, wrong_password = _secret("password"), _secret("wrong-password")
    texts = {kind: _secret(kind) for kind in ("ws-text", "http-text", "delta", "aborted-delta",
                                              "malformed", "refused", "direct-text")}
    token = await chat.user("alice", password=password)
    bob_token = await chat.user("bob")
    await chat.room("general")
    await chat.room("private", private=True, members=("bob",))

    bad = await chat.client.post("/api/login",
                                 json={"username": "alice", "password": wrong_password})
    assert bad.status == 401
    good = await chat.client.post("/api/login", json={"username": "alice", "password": password})
    assert good.status == 200
    session_token = (await good.json())["token"]
    chat.client.session.cookie_jar.clear()
    unknown = _secret("unknown-token")
    refused = await chat.client.get("/api/me", headers=chat.auth(unknown))
    assert refused.status == 401

    alice, alice_by_session, bob = (await chat.ws(token), await chat.ws(session_token),
                                    await chat.ws(bob_token))
    for ws in (alice, alice_by_session, bob):
        assert (await ws.join("general"))["op"] == "joined"
    assert (await alice.say("general", texts["ws-text"]))["op"] == "ack"
    posted = await chat.client.post("/api/rooms/general/messages", headers=chat.auth(bob_token),
                                    json={"text": texts["http-text"]})
    assert posted.status in (200, 201)
    assert (await alice.say("private", texts["refused"]))["op"] == "error"
    await alice.send('{"op": "send", "room": "general", "text": "' + texts["malformed"] + '"')
    await alice.send({"op": "send", "room": "general", "text": texts["malformed"], "extra": 1})
    stream = (await bob.request({"op": "stream_start", "room": "general"}, "ack"))["stream"]
    await bob.send({"op": "stream_delta", "stream": stream, "text": texts["delta"]})
    assert (await bob.request({"op": "stream_end", "stream": stream}, "ack"))["op"] == "ack"
    stream = (await bob.request({"op": "stream_start", "room": "general"}, "ack"))["stream"]
    await bob.send({"op": "stream_delta", "stream": stream, "text": texts["aborted-delta"]})
    await bob.request({"op": "ping"}, "pong")
    direct = await chat.client.post("/api/direct", headers=chat.auth(token),
                                    json={"user": "bob"})
    if direct.status == 200:
        room = (await direct.json())["name"]
        await alice.join(room)
        await alice.say(room, texts["direct-text"])
    for ws in (alice, alice_by_session, bob):  # bob's open stream is aborted and stored
        await ws.close()
    closed = await _closed_lines(caplog, 3)

    assert any("user=alice" in line for line in closed), "the guard saw the session's log"
    logged = _everything_logged(caplog.records)
    leaked = {name: value for name, value in (
        ("password", password), ("wrong password", wrong_password), ("api token", token),
        ("bob's token", bob_token), ("session token", session_token),
        ("unknown token", unknown), *texts.items())
        if any(value in line for line in logged)}
    assert not leaked, f"secrets in the log: {sorted(leaked)}"
