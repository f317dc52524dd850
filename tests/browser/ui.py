"""Helpers for the browser tests and scripts/bench_ui: the daemon's users, pages logged in as
one of them, and fast ways to fill a room from Python (HTTP and raw WebSocket frames)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from tests.system.daemon import OVERLOADED_RETRY_S, Daemon, bearer

CHROMIUM = os.environ.get("CHATSERVER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_INSTALL = "apt-get install -y --no-install-recommends chromium"
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 760}
MESSAGES = "#message-list li.msg"


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None. A sentence with the fix."""
    if importlib.util.find_spec("playwright") is None:
        return ("the Python package playwright is not installed: "
                ".venv/bin/pip install -e '.[test]' (setup.cfg pins the release)")
    if not os.access(CHROMIUM, os.X_OK):
        return (f"Debian's chromium is not installed ({CHROMIUM} is missing): install it with "
                f"`{CHROMIUM_INSTALL}` as root (scripts/test does this), or set "
                "CHATSERVER_CHROMIUM to a chromium binary")
    return None


def room_name(prefix: str) -> str:
    """A room name no other test uses (the daemon is shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass
class ChatServer:
    """The daemon under test with its users' passwords and API tokens."""

    daemon: Daemon
    passwords: dict[str, str]
    tokens: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.daemon.base_url

    async def call(self, user: str, method: str, path: str, body: Any = None) -> Any:
        """One HTTP API call as `user` (bearer token); the JSON answer, which must be 2xx.
        `overloaded` (a just-restarted server on a busy machine) is retried for a while."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OVERLOADED_RETRY_S
        async with aiohttp.ClientSession(self.base_url) as session:
            while True:
                async with session.request(method, path, json=body,
                                           headers=bearer(self.tokens[user])) as reply:
                    data = await reply.json()
                if reply.status == 503 and loop.time() < deadline:
                    await asyncio.sleep(0.2)
                    continue
                assert reply.status < 300, f"{method} {path}: {reply.status} {data}"
                return data

    async def new_user(self, prefix: str) -> str:
        """A user no other test uses (their unread counts and title are theirs alone)."""
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        password = f"{name}-password-1"
        self.tokens[name] = await asyncio.to_thread(self.daemon.add_user, name, password)
        self.passwords[name] = password
        return name

    async def create_room(self, user: str, name: str, *, private: bool = False,
                          members: tuple[str, ...] = ()) -> None:
        await self.call(user, "POST", "/api/rooms", {"name": name, "private": private})
        for member in members:
            await self.call(user, "POST", f"/api/rooms/{name}/members", {"user": member})

    async def say(self, user: str, room: str, text: str) -> dict[str, Any]:
        """Send over HTTP (as a bot would); the stored message's {room, seq, id, ts}."""
        reply: dict[str, Any] = await self.call(user, "POST", f"/api/rooms/{room}/messages",
                                                {"text": text})
        return reply

    async def socket(self, session: aiohttp.ClientSession, user: str) -> RawSocket:
        ws = await session.ws_connect(self.daemon.ws_url, headers=bearer(self.tokens[user]))
        hello = orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        assert hello["op"] == "hello", hello
        return RawSocket(ws)


class RawSocket:
    """Protocol frames over one WebSocket, for what the HTTP API cannot do (streams) or does
    too slowly (hundreds of messages). Replies are matched by ref; other frames are skipped."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.refs = 0
        self.replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            waiter = self.replies.pop(frame.get("ref") or "", None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
        for waiter in self.replies.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the socket closed before the reply"))

    async def send(self, frame: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send a frame with a fresh ref; a future of the frame that answers it."""
        self.refs += 1
        ref = f"t{self.refs}"
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[ref] = reply
        await self.ws.send_str(orjson.dumps({**frame, "ref": ref}).decode())
        return reply

    async def request(self, frame: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        reply = await asyncio.wait_for(await self.send(frame), timeout)
        assert reply["op"] != "error", f"{frame['op']} failed: {reply}"
        return reply

    async def delta(self, stream: str, text: str) -> None:
        """A stream delta has no reply on success."""
        await self.ws.send_str(orjson.dumps({"op": "stream_delta", "stream": stream,
                                             "text": text}).decode())

    async def send_many(self, room: str, texts: list[str], *, interval: float = 0.0,
                        timeout: float = 60) -> list[dict[str, Any]]:
        """Send every text without waiting for acks (paced every `interval` seconds when
        given, on an absolute schedule); every ack, in the order sent."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        acks = []
        for i, text in enumerate(texts):
            if interval:
                delay = start + i * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            acks.append(await self.send({"op": "send", "room": room, "text": text}))
        done = await asyncio.wait_for(asyncio.gather(*acks), timeout)
        errors = [reply for reply in done if reply["op"] != "ack"]
        assert not errors, f"{len(errors)} sends failed, e.g. {errors[0]}"
        return done

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


@dataclasses.dataclass
class ChatPage:
    """A browser context logged in as `user`, with the UI open; JavaScript errors collected."""

    user: str
    context: Any
    page: Any
    errors: list[str]

    async def texts(self) -> list[str]:
        """The open room's rendered messages, top to bottom, as the reader sees them."""
        texts: list[str] = await self.page.locator(f"{MESSAGES} .msg-body").all_inner_texts()
        return texts

    async def send(self, text: str) -> None:
        """Type into the composer and press Enter, as a user does."""
        await self.page.locator("#composer-input").fill(text)
        await self.page.locator("#composer-input").press("Enter")

    def check_no_errors(self) -> None:
        assert not self.errors, f"{self.user}'s page raised: {self.errors}"

    async def close(self) -> None:
        await self.context.close()


async def open_chat(browser: Any, server: ChatServer, user: str, *, room: str | None = None,
                    viewport: dict[str, int] = DESKTOP, via_form: bool = False,
                    socket_route: Callable[[Any], Any] | None = None) -> ChatPage:
    """A new context for `user` on the UI, connected, with `room` open when given. Logs in
    through the form when `via_form`, else through POST /api/login (the same cookie).
    `socket_route`: Playwright's WebSocketRoute handler for the page's /ws, set before the
    page loads (to hold frames back or send the page frames the server has not)."""
    from playwright.async_api import expect

    context = await browser.new_context(base_url=server.base_url, viewport=viewport)
    page = await context.new_page()
    if socket_route is not None:
        await page.route_web_socket(re.compile(r"/ws$"), socket_route)
    chat = ChatPage(user, context, page, [])
    page.on("pageerror", lambda error: chat.errors.append(str(error)))
    if not via_form:
        reply = await context.request.post("/api/login", data={
            "username": user, "password": server.passwords[user]})
        assert reply.ok, f"login as {user}: {reply.status} {await reply.text()}"
    await page.goto(f"/#{room}" if room else "/")
    if via_form:
        await page.get_by_label("Username", exact=True).fill(user)
        await page.get_by_label("Password", exact=True).fill(server.passwords[user])
        await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "connected")
    if room:
        await expect(page.locator("#room-title")).to_have_text(f"#{room}")
        await expect(page.locator("#message-scroller")).to_have_attribute("aria-busy", "false")
    return chat


async def eventually(action: Callable[[int], Awaitable[None]],
                     check: Callable[[float], Awaitable[None]], *, attempts: int = 5,
                     check_ms: float = 3_000) -> None:
    """Do `action(attempt)` until `check(timeout_ms)` passes. For typing and presence, which
    the server drops while its event loop lags (docs/protocol.md, "Overload": level 1 sheds
    ephemera) — and a loaded 2-core test machine lags now and then."""
    for attempt in range(attempts):
        await action(attempt)
        try:
            await check(check_ms)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise
