"""No message text, password or token ever reaches the log: a whole chat session, logged at
DEBUG in every format, is searched for each secret it used."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import pytest

from chatserver import hooks
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
    """Log in (right and wrong password), connect by token and by session, send, post, post
    through a webhook (good, bad and revoked), stream and abort a stream, send malformed and
    refused frames, disconnect: no record at DEBUG holds a message's text, a password or a
    token (webhook URLs included), in text, JSON or its raw arguments."""
    # As in production: the daemon runs without aiohttp's access log (daemon.py, log.py), which
    # would log every URL. The test server has one; only the app's own records are in scope.
    # Set first: set_level also sets caplog's handler level, and that must end up at DEBUG.
    caplog.set_level(logging.WARNING, logger="aiohttp.access")
    caplog.set_level(logging.DEBUG)
    password, wrong_password = _secret("password"), _secret("wrong-password")
    texts = {kind: _secret(kind) for kind in ("ws-text", "http-text", "delta", "aborted-delta",
                                              "malformed", "refused", "direct-text", "hook-text",
                                              "hook-bad", "hook-revoked")}
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
    hook, hook_token = await hooks.create(chat.ctx.store, "general", None, None)
    for body, status in (({"text": texts["hook-text"]}, 200), ({"txt": texts["hook-bad"]}, 400),
                         ({"text": texts["hook-bad"] + "\x00"}, 400)):
        reply = await chat.client.post(f"/hooks/{hook_token}", json=body)
        assert reply.status == status, await reply.text()
    await chat.ctx.store.revoke_hook(hook.id)
    revoked = await chat.client.post(f"/hooks/{hook_token}", json={"text": texts["hook-revoked"]})
    assert revoked.status == 404
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
        ("unknown token", unknown), ("webhook token", hook_token), *texts.items())
        if any(value in line for line in logged)}
    assert not leaked, f"secrets in the log: {sorted(leaked)}"
