"""Incoming webhooks over HTTP: `POST /hooks/{token}` posts as the hook's bot, live and stored;
bad bodies get 400 with the reason; unknown, revoked and disabled hooks look alike (404)."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatserver import cli, hooks
from chatserver.config import RateConfig
from chatserver.errors import Forbidden
from chatserver.store.base import Hook
from chatserver.store.sqlite import SqliteStore

from .conftest import Chat, ChatFactory


async def _hook(chat: Chat, room: str, name: str | None = None) -> tuple[Hook, str]:
    return await hooks.create(chat.ctx.store, room, name, None)


async def _post(chat: Chat, token: str, body: Any = None, *, data: Any = None,
                **headers: str) -> tuple[int, dict[str, Any], Any]:
    """Status, JSON body and headers of one hook post (`body` is sent as JSON)."""
    if body is not None:
        data, headers = orjson.dumps(body), {"Content-Type": "application/json", **headers}
    async with chat.client.post(f"/hooks/{token}", data=data, headers=headers) as reply:
        return reply.status, await reply.json(), reply.headers


async def _history(chat: Chat, room: str) -> list[dict[str, Any]]:
    found = await chat.ctx.store.get_room(room)
    assert found is not None
    messages = await chat.ctx.store.messages_after(found.id, 0, 100)
    return [{"seq": m.seq, "user": m.user, "text": m.text} for m in messages]


async def test_post_reaches_joined_clients_live_and_history_as_the_bot(chat: Chat) -> None:
    """A JSON post answers 200 `{ok, room, seq, id, ts}` once stored; a joined client gets the
    message live from the bot `hook-<room>`, Markdown rendered, and history holds it."""
    token = await chat.user("alice")
    await chat.room("general")
    hook, secret = await _hook(chat, "general")
    assert hook.bot.name == "hook-general" and hook.bot.is_bot
    alice = await chat.ws(token)
    await alice.join("general")

    status, body, _ = await _post(chat, secret, {"text": "deploy **done**", "username": "x"})

    assert status == 200, body
    assert {k: body[k] for k in ("ok", "room", "seq")} == {"ok": True, "room": "general",
                                                           "seq": 1}
    assert await _history(chat, "general") == [
        {"seq": 1, "user": "hook-general", "text": "deploy **done**"}]
    live = await alice.recv_op("message")
    assert (live["user"], live["seq"], live["id"], live["ts"]) == (
        "hook-general", 1, body["id"], body["ts"])
    assert "<strong>done</strong>" in live["html"]


async def test_slack_form_encoding_posts_its_payload(chat: Chat) -> None:
    """`application/x-www-form-urlencoded` with a `payload` field holding the JSON message
    posts like a JSON body (Slack's other encoding)."""
    await chat.room("general")
    _, secret = await _hook(chat, "general", "deploys")
    payload = orjson.dumps({"text": "from a form & friends", "icon_emoji": ":x:"}).decode()
    status, body, _ = await _post(chat, secret, data={"payload": payload})
    assert status == 200, body
    assert await _history(chat, "general") == [
        {"seq": 1, "user": "deploys", "text": "from a form & friends"}]


async def test_every_bad_body_gets_400_with_its_reason_and_stores_nothing(
        make_chat: ChatFactory) -> None:
    """Not JSON, not an object, no or a mistyped `text`, an empty, NUL-holding or too long
    text, a form without a usable `payload`: each is 400 `bad_request` naming the problem."""
    chat = await make_chat(max_message_bytes=64)
    await chat.room("general")
    _, secret = await _hook(chat, "general")
    json, form = "application/json", hooks.FORM
    cases: list[tuple[bytes, str, str]] = [
        (b"not json", json, "not valid JSON"),
        (b'{"text": "\xff"}', json, "not valid JSON"),
        (b"", json, "not valid JSON"),
        (b'["text"]', json, "must be a JSON object"),
        (b'{"txt": "hi"}', json, "no 'text' field"),
        (b'{"text": 5}', json, "'text' must be a string, not a number"),
        (b'{"text": null}', json, "'text' must be a string, not null"),
        (b'{"text": ["a"]}', json, "'text' must be a string, not an array"),
        (b'{"text": ""}', json, "'text' must not be empty"),
        (b'{"text": "a\\u0000b"}', json, "NUL"),
        (orjson.dumps({"text": "é" * 33}), json, "'text' is 66 bytes; the limit is 64"),
        (b"text=hello", form, "needs a 'payload' field"),
        (b"payload=%7B&x=1", form, "'payload' is not valid JSON"),
        (b"payload=%7B%7D&payload=%7B%7D", form, "more than one 'payload'"),
        (b"payload=%7B%22text%22%3A1%7D", form, "'text' must be a string"),
        (b"&&", form, "not valid UTF-8 form encoding"),
    ]
    for raw, content_type, reason in cases:
        status, body, _ = await _post(chat, secret, data=raw, **{"Content-Type": content_type})
        assert (status, body["error"]) == (400, "bad_request"), (raw, body)
        assert reason in body["message"], (raw, body["message"])
    assert await _history(chat, "general") == []


async def test_body_over_the_limit_is_413_declared_or_chunked(chat: Chat) -> None:
    """A body over the hook limit (8 × max_message_bytes, at least max_frame_bytes) is 413
    `too_large`, whether its Content-Length says so or it arrives chunked."""
    await chat.room("general")
    _, secret = await _hook(chat, "general")
    limits = chat.ctx.config.limits
    limit = hooks.body_limit(limits.max_message_bytes, limits.max_frame_bytes)
    big = orjson.dumps({"text": "x", "padding": "p" * limit})
    status, body, _ = await _post(chat, secret, data=big)
    assert (status, body["error"]) == (413, "too_large"), body
    assert str(limit) in body["message"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 4096 + 2):
            yield b" " * 4096

    status, body, _ = await _post(chat, secret, data=chunks())
    assert (status, body["error"]) == (413, "too_large"), body
    assert await _history(chat, "general") == []


async def test_unknown_revoked_and_disabled_hooks_answer_the_same_404(chat: Chat) -> None:
    """An unknown token, a revoked hook's and a disabled bot's all get the same 404 body; a
    hook token is no API token (401 as a bearer)."""
    await chat.room("general")
    hook, secret = await _hook(chat, "general")
    _, other = await _hook(chat, "general", "other-bot")
    assert (await _post(chat, secret, {"text": "before"}))[0] == 200
    unknown = await _post(chat, "x" * 43, {"text": "hi"})
    assert (unknown[0], unknown[1]["error"]) == (404, "not_found")

    await chat.ctx.store.revoke_hook(hook.id)
    await chat.ctx.store.set_disabled("other-bot", True)

    for token in (secret, other):
        status, body, _ = await _post(chat, token, {"text": "after"})
        assert (status, body) == (unknown[0], unknown[1])
    me = await chat.client.get("/api/me", headers=chat.auth(secret))
    assert me.status == 401
    assert [m["text"] for m in await _history(chat, "general")] == ["before"]


async def test_private_room_hook_posts_as_a_member_bot_that_cannot_log_in(chat: Chat) -> None:
    """A hook on a private room makes its bot a member, its post reaches the room's members,
    the bot cannot log in with any password, and a direct room takes no hook."""
    bob = await chat.user("bob")
    await chat.user("carol")
    await chat.room("secret", private=True, members=("bob",))
    hook, secret = await _hook(chat, "secret")
    assert await chat.ctx.store.member_names(hook.room.id) == ["bob", "hook-secret"]
    reader = await chat.ws(bob)
    await reader.join("secret")
    status, body, _ = await _post(chat, secret, {"text": "for members"})
    assert status == 200, body
    assert (await reader.recv_op("message"))["user"] == "hook-secret"
    for password in ("!", "", "hook-secret"):
        login = await chat.client.post("/api/login",
                                       json={"username": "hook-secret", "password": password})
        assert login.status in (400, 401), password
    direct = await chat.client.post("/api/direct", headers=chat.auth(bob),
                                    json={"user": "carol"})
    with pytest.raises(Forbidden, match="direct room"):
        await _hook(chat, (await direct.json())["name"])


async def test_each_hook_is_rate_limited_with_retry_after(make_chat: ChatFactory) -> None:
    """Past `[limits.rate]` burst a hook gets 429 `rate_limited` with Retry-After and nothing
    is stored; another hook on the same room is not held back by it."""
    chat = await make_chat(rate=RateConfig(per_second=0.1, burst=2))
    await chat.room("general")
    _, busy = await _hook(chat, "general")
    _, calm = await _hook(chat, "general", "calm")
    for text in ("one", "two"):
        assert (await _post(chat, busy, {"text": text}))[0] == 200
    status, body, headers = await _post(chat, busy, {"text": "three"})
    assert (status, body["error"]) == (429, "rate_limited"), body
    assert int(headers["Retry-After"]) >= 1 and body["retry_after"] > 0
    assert (await _post(chat, calm, {"text": "calm"}))[0] == 200
    assert [m["text"] for m in await _history(chat, "general")] == ["one", "two", "calm"]


async def test_store_that_cannot_commit_answers_503_and_nothing_is_stored(chat: Chat) -> None:
    """While another process holds SQLite's write lock past the writer's wait, a post answers
    503 `overloaded` (nothing acknowledged); once the lock is gone the next post is seq 1."""
    store = chat.ctx.store
    assert isinstance(store, SqliteStore)
    await chat.room("general")
    _, secret = await _hook(chat, "general")
    # The writer waits 5 s for a lock by default; 50 ms keeps the test short.
    await store.run_in_writer(lambda conn: conn.execute("PRAGMA busy_timeout = 50"))
    holder = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
        status, body, _ = await _post(chat, secret, {"text": "lost"})
        assert (status, body["error"]) == (503, "overloaded"), body
        assert "store" in body["message"], body
        await asyncio.to_thread(holder.execute, "ROLLBACK")
    finally:
        holder.close()
    await store.run_in_writer(lambda conn: conn.execute("PRAGMA busy_timeout = 5000"))
    status, body, _ = await _post(chat, secret, {"text": "kept"})
    assert (status, body["seq"]) == (200, 1), body
    assert [m["text"] for m in await _history(chat, "general")] == ["kept"]


def test_cli_prints_the_url_from_base_url_or_config_and_refuses_what_it_cannot_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`hook create` prints `<base>/hooks/<token>` from `--base-url`, else from [server] host
    and port (loopback, with a warning, for a wildcard host); a bad URL is usage (exit 2); a
    human's name, an unknown room or an unknown hook id exit 1 naming it."""
    config = tmp_path / "chat.toml"
    config.write_text(f'[server]\nhost = "0.0.0.0"\nport = 9999\n[store]\n'
                      f'path = {orjson.dumps(str(tmp_path / "chat.db")).decode()}\n')

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["--config", str(config), *args])
        out, err = capsys.readouterr()
        return code, out, err

    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-enough-password\n"))
    assert run("user", "add", "bob")[0] == 0
    assert run("room", "create", "general")[0] == 0
    code, out, err = run("hook", "create", "general")
    assert code == 0 and re.fullmatch(r"http://127\.0\.0\.1:9999/hooks/[\w-]{43}\n", out), out
    assert "--base-url" in err
    code, out, _ = run("hook", "create", "general", "--name", "ci", "--base-url",
                       "https://chat.example.com/")
    assert code == 0 and re.fullmatch(r"https://chat\.example\.com/hooks/[\w-]{43}\n", out), out
    for args, named in ((("hook", "create", "general", "--name", "bob"), "not a bot"),
                        (("hook", "create", "nosuch"), "nosuch"),
                        (("hook", "revoke", "99"), "99")):
        code, out, err = run(*args)
        assert (code, out) == (1, "") and named in err, (args, err)
    with pytest.raises(SystemExit) as usage:
        run("hook", "create", "general", "--base-url", "ftp://chat.example.com")
    assert usage.value.code == 2
    assert "http:// or https://" in capsys.readouterr().err
    code, out, _ = run("hook", "list")
    assert [line.split("\t")[1:3] for line in out.splitlines()] == [
        ["general", "hook-general"], ["general", "ci"]]
