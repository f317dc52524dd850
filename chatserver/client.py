"""An asyncio client for chatserver: connect, join, send, and read messages across reconnects.

The client survives real networks: when the connection drops (server restart, a killed
instance, 1001 or 1013) it reconnects with exponential backoff and full jitter — to the next
URL when several are given — and re-joins every room with `after` = the last seq it delivered,
so `messages()` yields each room's messages once, in seq order, without a gap.

    async with ChatClient("ws://127.0.0.1:8080/ws", token) as chat:
        await chat.join("general")
        ack = await chat.send("general", "hello")
        async for message in chat.messages():
            print(message["user"], message["text"])

Requests in flight when a connection drops fail with `ConnectionLost`; a `send` that failed
that way may or may not have been stored (its ack was lost) — check history before resending.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import orjson

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# 1001 (server going away) and 1013 (try again later) ask clients to spread out: reconnect after
# a random 0.5-5 s (docs/protocol.md, "Daemon life"), so a restart is not met by a stampede.
AFTER_SERVER_HINT = (0.5, 5.0)
MESSAGE_QUEUE_MAX = 10_000


class ChatClientError(Exception):
    """The server answered a request with an `error` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code: str = frame.get("code", "internal")
        self.frame = frame


class ConnectionLost(Exception):
    """The connection dropped before the request was answered."""


class ChatClient:
    def __init__(self, urls: str | Sequence[str], token: str, *,
                 backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP,
                 request_timeout: float = 30.0) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.token = token
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.request_timeout = request_timeout
        self.hello: dict[str, Any] = {}
        self.reconnects = 0
        self._url_index = 0
        self._refs = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._rooms: dict[str, int] = {}  # room -> last seq delivered to the caller
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MESSAGE_QUEUE_MAX)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> ChatClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return self.urls[self._url_index % len(self.urls)]

    async def connect(self) -> None:
        """Connect (retrying with backoff) and keep reconnecting until `close()`."""
        self._session = aiohttp.ClientSession()
        await self._open_with_backoff(first=True)
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._fail_pending(ConnectionLost("client closed"))

    # -- requests ------------------------------------------------------------------------------

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with a fresh ref; return the frame answering it (raise on `error`)."""
        await self._connected.wait()
        ref = f"c{next(self._refs)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            assert self._ws is not None
            await self._ws.send_str(orjson.dumps({**frame, "ref": ref}).decode())
            reply = await asyncio.wait_for(future, self.request_timeout)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ConnectionLost(str(exc)) from exc
        finally:
            self._pending.pop(ref, None)
        if reply.get("op") == "error":
            raise ChatClientError(reply)
        return reply

    async def join(self, room: str, after: int | None = None) -> dict[str, Any]:
        """Join a room; with `after`, missed messages come through `messages()` first."""
        frame: dict[str, Any] = {"op": "join", "room": room}
        if after is not None:
            frame["after"] = after
        joined = await self.request(frame)
        self._rooms.setdefault(room, after if after is not None else joined["seq"])
        return joined

    async def send(self, room: str, text: str) -> dict[str, Any]:
        """Send a message; returns the `ack` (`seq`, `id`, `ts`) once it is durable."""
        return await self.request({"op": "send", "room": room, "text": text})

    async def ping(self) -> float:
        """Application round trip through the server's send queue, in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.request({"op": "ping"})
        return loop.time() - started

    def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Every `message` of joined rooms, once each, in seq order per room.

        Waiting on it with a timeout (`asyncio.wait_for(anext(it), 5)`) is safe: a wait that
        times out takes nothing, and the iterator goes on. (An async generator would be
        closed by that cancellation and end for good.)"""
        return _QueueIterator(self._messages)

    # -- the connection ---------------------------------------------------------------------

    async def _open_with_backoff(self, *, first: bool = False, hint: float = 0.0) -> None:
        attempt = 0
        while True:
            if hint:
                await asyncio.sleep(hint)  # the server's hint replaces the first backoff
                hint = 0.0
            elif not first or attempt:
                delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
                await asyncio.sleep(delay)
            try:
                await self._open()
                return
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                log.info("connect to %s failed: %s", self.url, exc)
                self._url_index += 1
                attempt += 1

    async def _open(self) -> None:
        assert self._session is not None
        ws = await self._session.ws_connect(
            self.url, headers={"Authorization": f"Bearer {self.token}"}, heartbeat=None,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        hello = await asyncio.wait_for(ws.receive(), 10)
        if hello.type is not aiohttp.WSMsgType.TEXT:
            await ws.close()
            raise aiohttp.ClientError(f"no hello from {self.url}")
        self.hello = orjson.loads(hello.data)
        self._ws = ws

    async def _run(self) -> None:
        while not self._closed:
            rejoin = asyncio.get_running_loop().create_task(self._rejoin())
            self._connected.set()
            code = await self._read()
            rejoin.cancel()
            self._connected.clear()
            self._fail_pending(ConnectionLost(f"connection closed ({code})"))
            if self._closed:
                return
            self.reconnects += 1
            self._url_index += 1
            hint = random.uniform(*AFTER_SERVER_HINT) if code in (1001, 1013) else 0.0
            await self._open_with_backoff(hint=hint)

    async def _rejoin(self) -> None:
        for room, last in list(self._rooms.items()):
            try:
                await self.request({"op": "join", "room": room, "after": last})
            except (TimeoutError, ConnectionLost, ChatClientError) as exc:
                log.info("re-joining %s failed: %s", room, exc)
                return

    async def _read(self) -> int | None:
        ws = self._ws
        assert ws is not None
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            self._dispatch(orjson.loads(msg.data))
        return ws.close_code

    def _dispatch(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "message":
            room, seq = frame["room"], frame["seq"]
            last = self._rooms.get(room)
            if last is not None and seq <= last:
                return  # already delivered before a reconnect
            self._rooms[room] = seq
            self._messages.put_nowait(frame)
            return
        ref = frame.get("ref")
        future = self._pending.get(ref) if ref is not None else None
        if future is not None and not future.done():
            future.set_result(frame)

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()


class _QueueIterator:
    """An endless async iterator over a queue; a cancelled `__anext__` loses no item."""

    def __init__(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queue = queue

    def __aiter__(self) -> _QueueIterator:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self._queue.get()
