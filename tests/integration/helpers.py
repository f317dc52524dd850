"""Helpers shared by integration tests, on top of the `chat` fixture from conftest.py."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import aiohttp
import orjson

from chatserver.tokens import hash_token, new_token
from tests.integration.conftest import FRAME_TIMEOUT, Chat, WsClient
from workers.passwords import hash_password

PASSWORD = "a-long-enough-password"


@functools.cache
def _password_hash() -> str:
    # argon2 is slow on purpose; one hash serves every user these tests create.
    return hash_password(PASSWORD)


async def fast_user(chat: Chat, name: str, *, admin: bool = False) -> str:
    """Create a user whose password is `PASSWORD`; return an API token for it."""
    # The first call hashes: off the loop, or the app's overload guard sees a 0.2 s stall and
    # starts refusing connections (the stall watchdog found this).
    password_hash = await asyncio.to_thread(_password_hash)
    user = await chat.ctx.store.create_user(name, password_hash, is_admin=admin)
    token = new_token()
    await chat.ctx.store.add_token(user.id, hash_token(token), "api")
    return token


async def login(chat: Chat, name: str, password: str = PASSWORD) -> str:
    """POST /api/login; the session token (also the `chat_session` cookie's value).

    The test client's cookie jar is cleared afterwards, so every later request carries only
    the credentials the test gives it explicitly.
    """
    reply = await chat.client.post("/api/login", json={"username": name, "password": password})
    assert reply.status == 200, await reply.text()
    body = await reply.json()
    assert reply.cookies["chat_session"].value == body["token"]
    chat.client.session.cookie_jar.clear()
    token: str = body["token"]
    return token


def own_origin(chat: Chat) -> str:
    """The Origin a browser would send for a page served by the app under test."""
    return f"http://{chat.client.host}:{chat.client.port}"


async def ws_refused(chat: Chat, headers: dict[str, str]) -> int:
    """The HTTP status that refused the upgrade; fails if the socket was accepted."""
    try:
        ws = await chat.client.ws_connect("/ws", headers=headers)
    except aiohttp.WSServerHandshakeError as refused:
        return refused.status
    await ws.close()
    raise AssertionError(f"the upgrade with {headers} was accepted")


async def next_close(client: WsClient, timeout: float = FRAME_TIMEOUT) -> int | None:
    """Read until the server closes the socket; its close code (text frames are skipped)."""
    while True:
        msg = await asyncio.wait_for(client.ws.receive(), timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            continue
        if msg.type is aiohttp.WSMsgType.CLOSE:
            code: int = msg.data
            return code
        return client.ws.close_code


async def reply_to(client: WsClient, ref: str, timeout: float = FRAME_TIMEOUT
                   ) -> dict[str, Any]:
    """The next frame carrying `ref`, skipping presence, typing and others' frames."""
    while True:
        frame = await client.recv(timeout)
        if frame.get("ref") == ref:
            return frame


async def still_works(client: WsClient, room: str) -> None:
    """The connection answers a ping with a pong and a send with an ack."""
    pong = await client.request({"op": "ping"}, "pong")
    assert pong["op"] == "pong", pong
    ack = await client.say(room, "still here")
    assert ack["op"] == "ack", ack


def frame_text(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()
