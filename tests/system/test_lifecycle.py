"""Life cycle of the real daemon: first start, restart, SIGTERM under traffic, defaults."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.system.daemon import (
    Daemon,
    PipelinedSender,
    check_history,
    connect,
    port_is_free,
    to_thread,
)

pytestmark = pytest.mark.system

ADMIN_LINE = re.compile(r"created user 'admin' with password (\S+)")
SHUTDOWN_TIMEOUT = 10.0  # [server] shutdown_timeout, the default
EXIT_GRACE = 5.0  # interpreter and pool teardown after the shutdown proper, on a slow machine
SLOW_MARKDOWN = "[" * 16000  # valid Markdown that takes a while to render (tens of ms)
SLOW_SENDS = 4


async def login(http: aiohttp.ClientSession, username: str, password: str
                ) -> aiohttp.ClientResponse:
    async with http.post("/api/login", json={"username": username, "password": password}
                         ) as reply:
        await reply.read()
        return reply


async def test_first_start_prints_the_admin_password_once(daemon: Daemon) -> None:
    """The first start on an empty store logs the new admin's password once, that password
    logs in, and later starts print no password."""
    await to_thread(daemon.start)
    found = ADMIN_LINE.findall(daemon.stderr())
    assert len(found) == 1, f"expected one admin-password line, stderr:\n{daemon.stderr()}"
    password = found[0]
    async with daemon.http_session() as http:
        reply = await login(http, "admin", password)
        assert reply.status == 200
        body = await reply.json()
        assert body["user"] == {"name": "admin", "admin": True, "bot": False}
        assert isinstance(body["token"], str) and body["token"]
        cookie = reply.cookies["chat_session"]
        assert cookie.value == body["token"] and cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        assert (await login(http, "admin", password + "x")).status == 401

        await to_thread(daemon.restart, signal.SIGTERM)
        assert "created user" not in daemon.stderr(), daemon.stderr()
        assert (await login(http, "admin", password)).status == 200


async def test_sigterm_under_traffic_closes_with_1001_and_keeps_every_ack(
        server: Daemon) -> None:
    """SIGTERM during traffic closes every socket with 1001, exits 0 within the shutdown
    timeout, and every message acked before the close is in history after a restart."""
    tokens, _ = await asyncio.gather(
        to_thread(server.add_users, "s0", "s1", "s2", "idle", "lurker"),
        to_thread(server.cli_ok, "room", "create", "busy"))
    async with server.http_session() as http:
        clients = {name: await connect(http, server, token) for name, token in tokens.items()}
        for name, client in clients.items():
            if name != "lurker":  # connected, in no room
                await client.join("busy")
        senders = [PipelinedSender(name, clients[name].ws, "busy", 300)
                   for name in ("s0", "s1", "s2")]
        idle = PipelinedSender("idle", clients["idle"].ws, "busy", 0)
        lurker = PipelinedSender("lurker", clients["lurker"].ws, "busy", 0, frame_timeout=60)
        signalled: list[float] = []

        def on_ack() -> None:
            if not signalled and sum(len(s.acks) for s in senders) >= 100:
                server.kill(signal.SIGTERM)
                signalled.append(time.monotonic())

        await asyncio.wait_for(
            asyncio.gather(idle.read(), lurker.read(), *(s.run(on_ack) for s in senders)), 60)
        assert signalled, "SIGTERM was never sent: too few acks arrived"
        status = await to_thread(server.wait, SHUTDOWN_TIMEOUT + EXIT_GRACE + 20)
        took = time.monotonic() - signalled[0]
        assert status == 0, f"exit status {status}; stderr:\n{server.stderr()}"
        assert took <= SHUTDOWN_TIMEOUT + EXIT_GRACE, f"SIGTERM took {took:.1f} s"
        assert [s.close_code for s in (*senders, idle, lurker)] == [1001] * 5
        # Sends that arrived after the shutdown began may be refused, with `overloaded`.
        assert {e["code"] for s in senders for e in s.errors} <= {"overloaded"}
        assert "Traceback" not in server.stderr(), server.stderr()

        await to_thread(server.start)
        history = await server.history(http, tokens["s0"], "busy")
        check_history(history, senders)
        assert len(history) >= 100


async def test_sigterm_never_leaves_a_stored_message_unacked(server: Daemon) -> None:
    """A graceful shutdown acks, before the 1001 close, every message it stores: a message
    stored without its ack would be sent again by the client, and so stored twice.

    The sends are Markdown that takes a while to render, so SIGTERM (sent when the first ack
    arrives) finds the server with a send read and accepted but not yet appended.
    """
    token = await to_thread(server.add_user, "piper")
    await to_thread(server.cli_ok, "room", "create", "piped")
    async with server.http_session() as http:
        client = await connect(http, server, token)
        await client.join("piped")
        for i in range(SLOW_SENDS):
            await client.send({"op": "send", "room": "piped", "text": f"{SLOW_MARKDOWN} {i}",
                               "ref": f"slow-{i}"})
        replies = []
        while True:
            msg = await asyncio.wait_for(client.ws.receive(), 30)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            reply = orjson.loads(msg.data)
            replies.append(reply)
            if reply["op"] == "ack" and len(replies) == 1:
                server.kill(signal.SIGTERM)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
        assert await to_thread(server.wait, SHUTDOWN_TIMEOUT + EXIT_GRACE) == 0

        await to_thread(server.start)
        history = await server.history(http, token, "piped")
        acked = {reply["id"]: reply for reply in replies if reply["op"] == "ack"}
        assert acked, f"no ack came before the close: {replies}"
        unacked = [(m["seq"], m["text"][-8:]) for m in history if m["id"] not in acked]
        assert not unacked, (f"stored but never acked before the 1001 close: {unacked}; the "
                             f"client got {[(r['op'], r.get('ref')) for r in replies]}")
        for m in history:
            assert acked[m["id"]]["seq"] == m["seq"]


async def test_no_config_serves_on_localhost_8080_with_defaults(tmp_path: Path) -> None:
    """`chatserver` with no arguments serves on 127.0.0.1:8080 with a chatserver.db in the
    working directory and an admin created on first start."""
    if not port_is_free(8080):
        pytest.skip("127.0.0.1:8080 is in use on this machine")
    daemon = Daemon(tmp_path, argv=[], port=8080)
    try:
        try:
            await to_thread(daemon.start)
        except AssertionError:
            if "cannot listen" in daemon.stderr():
                pytest.skip("127.0.0.1:8080 was taken by another process meanwhile")
            raise
        assert (tmp_path / "chatserver.db").exists()
        assert len(ADMIN_LINE.findall(daemon.stderr())) == 1
        assert "listening on http://127.0.0.1:8080" in daemon.stderr()
        async with daemon.http_session() as http:
            async with http.get("/readyz") as reply:
                assert reply.status == 200
        daemon.kill(signal.SIGTERM)
        assert await to_thread(daemon.wait, SHUTDOWN_TIMEOUT + EXIT_GRACE) == 0
    finally:
        daemon.stop()
