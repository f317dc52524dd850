"""An asyncio client for chatserver: connect, join, send, stream and read messages across
reconnects; read history over HTTP.

The client survives real networks: when the connection drops (server restart, a killed
instance, 1001 or 1013) it reconnects with exponential backoff and full jitter — to the next
URL when several are given — and re-joins every room with `after` = the last seq it delivered,
so `messages()` yields each room's messages once, in seq order, without a gap (a resume the
server truncates at `replay_max` is completed from history before live messages go on).

    async with ChatClient("ws://127.0.0.1:8080/ws", token) as chat:
        await chat.join("general")
        ack = await chat.send("general", "hello")
        async for message in chat.messages():
            print(message["user"], message["text"])

Errors are one hierarchy under `ChatClientError` (docs/client.md, "Errors"). A refused token
(HTTP 401) is never retried: `connect()` raises `AuthenticationFailed`, and a reconnect that
meets it ends the client (pending requests and `messages()` raise it).

Requests in flight when a connection drops fail with `ConnectionLost`; a `send` that failed
that way may or may not have been stored (its ack was lost) — check history before resending.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, NotRequired, TypedDict, cast
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import orjson

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# 1001 (server going away) and 1013 (try again later) ask clients to spread out: reconnect after
# a random 0.5-5 s (docs/protocol.md, "Daemon life"), so a restart is not met by a stampede.
AFTER_SERVER_HINT = (0.5, 5.0)
SPREAD_CLOSE_CODES = frozenset({1001, 1013})
MESSAGE_QUEUE_MAX = 10_000
HISTORY_PAGE_MAX = 200  # the server's largest history page
STREAM_GIVE_UP_TIMEOUT = 2.0  # seconds a failed `stream()` block may spend discarding


# -- what the server sends ------------------------------------------------------------------


class Message(TypedDict):
    """A stored message (docs/protocol.md, `message` frame)."""

    op: str
    room: str
    seq: int
    id: str
    user: str
    text: str
    html: str
    ts: str
    stream: NotRequired[str]
    aborted: NotRequired[bool]


class Ack(TypedDict):
    """The answer to a `send` or `stream_end`: the message is durable."""

    op: str
    ref: str | None
    room: str
    seq: int
    id: str
    ts: str


class Joined(TypedDict):
    op: str
    ref: str | None
    room: str
    seq: int
    truncated: NotRequired[bool]


class HistoryPage(TypedDict):
    """One page of history, ascending by seq; `more` says more lie in the paging direction."""

    room: str
    messages: list[Message]
    more: bool


# -- errors ---------------------------------------------------------------------------------


class ChatClientError(Exception):
    """Base of every error the client raises; `code` is stable (the server's error codes, plus
    `connection_lost`, `timeout`, `unreachable` and `stream_ended` for the client's own)."""

    code: str = "client_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ServerError(ChatClientError):
    """The server refused a request: an `error` frame, or an HTTP error body."""

    def __init__(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code") or frame.get("error") or "internal")
        super().__init__(str(frame.get("message") or code), code=code)
        self.frame = frame

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AuthenticationFailed(ServerError):
    """The server refused the token (HTTP 401, or 403 for a refused origin). Retrying with
    the same token cannot help, so the client never does."""


class RetryLater(ServerError):
    """A refusal that passes with time; `retry_after` is the server's hint in seconds (the
    frame's `retry_after`, or HTTP Retry-After), None when it gave none."""

    @property
    def retry_after(self) -> float | None:
        value = self.frame.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


class RateLimited(RetryLater):
    """`rate_limited`: wait `retry_after` seconds before sending again."""


class Overloaded(RetryLater):
    """`overloaded`: the server sheds load or cannot store right now; nothing was stored."""


class NotFound(ServerError):
    pass


class Forbidden(ServerError):
    pass


class TooLarge(ServerError):
    pass


class ConnectionLost(ChatClientError):
    """The connection dropped (or the client was closed) before the request was answered."""

    code = "connection_lost"


class RequestTimeout(ChatClientError, TimeoutError):
    """No answer within `request_timeout`."""

    code = "timeout"


class Unreachable(ChatClientError):
    """No connection could be made: `connect_timeout` passed, or the server answered the
    upgrade with a status retrying cannot fix (`status`, e.g. 404 for a wrong URL)."""

    code = "unreachable"

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


_SERVER_ERRORS: dict[str, type[ServerError]] = {
    "unauthorized": AuthenticationFailed, "rate_limited": RateLimited,
    "overloaded": Overloaded, "not_found": NotFound, "forbidden": Forbidden,
    "too_large": TooLarge,
}


def server_error(frame: dict[str, Any]) -> ServerError:
    """The exception for an `error` frame or HTTP error body, by its code."""
    code = str(frame.get("code") or frame.get("error") or "internal")
    return _SERVER_ERRORS.get(code, ServerError)(frame)


# -- URLs and reconnect timing (pure) ---------------------------------------------------------


def websocket_url(url: str) -> str:
    """The WebSocket URL for a server URL: `http://h:p[/prefix]` -> `ws://h:p[/prefix]/ws`
    (a path already ending in `/ws` is kept); `ws://` and `wss://` URLs are used as given."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL must start with http://, https://, ws:// or wss:// "
                         f"and name a host, got {url!r}")
    scheme = "ws" if parts.scheme == "http" else "wss"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, path if path.endswith("/ws") else path + "/ws",
                       "", ""))


def http_url(url: str) -> str:
    """The HTTP base URL for a server or WebSocket URL (no trailing slash)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL must start with http://, https://, ws:// or wss:// "
                         f"and name a host, got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[:-3]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def reconnect_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP,
                    close_code: int | None = None, retry_after: float | None = None,
                    spread: tuple[float, float] = AFTER_SERVER_HINT,
                    rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0 = the first after a drop).

    Full jitter over an exponential window; a 1001/1013 close (`close_code`, given for the
    first attempt only) asks for a random wait within `spread` instead; a server's
    Retry-After is a floor."""
    draw = rng or random
    if close_code in SPREAD_CLOSE_CODES:
        delay = draw.uniform(*spread)
    else:
        delay = draw.uniform(0, min(cap, base * 2**attempt))
    return max(delay, retry_after) if retry_after is not None else delay


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff


# -- the client -------------------------------------------------------------------------------


class ChatClient:
    """A connection to one chatserver (any of `urls`) that survives reconnects.

    `connect_timeout` bounds how long the first `connect()` keeps retrying (None: forever);
    reconnects after a drop retry until `close()`, unless the server refuses the token."""

    def __init__(self, urls: str | Sequence[str], token: str, *,
                 backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP,
                 request_timeout: float = 30.0, connect_timeout: float | None = None,
                 going_away_delay: tuple[float, float] = AFTER_SERVER_HINT) -> None:
        given = [urls] if isinstance(urls, str) else list(urls)
        if not given:
            raise ValueError("ChatClient needs at least one server URL")
        self.urls = [websocket_url(url) for url in given]
        self.token = token
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.going_away_delay = going_away_delay
        self.hello: dict[str, Any] = {}
        self.reconnects = 0
        self._url_index = 0
        self._generation = 0  # bumped per connection: a stream lives on one connection only
        self._refs = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._streams: dict[str, Stream] = {}  # delta ref -> stream, to route delta errors
        self._rooms: dict[str, int] = {}  # room -> last seq delivered to the caller
        self._catching_up: dict[str, list[dict[str, Any]]] = {}  # room -> live frames held
        self._messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(MESSAGE_QUEUE_MAX)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ready = asyncio.Event()  # connected, failed for good, or closed
        self._connected = False
        self._failure: ChatClientError | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> ChatClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return self.urls[self._url_index % len(self.urls)]

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        """Connect (retrying with backoff, within `connect_timeout`) and keep reconnecting
        until `close()`. Raises `AuthenticationFailed` or `Unreachable`."""
        loop = asyncio.get_running_loop()
        deadline = None if self.connect_timeout is None else loop.time() + self.connect_timeout
        try:
            await self._open_with_backoff(immediately=True, deadline=deadline)
        except BaseException:
            await self._close_session()
            raise
        self._runner = loop.create_task(self._run())

    async def close(self) -> None:
        """Close the connection; `messages()` ends once it has yielded what it holds."""
        self._closed = True
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        self._connected = False
        await self._close_session()
        self._fail_pending(ConnectionLost("the client is closed"))
        self._end_messages()

    # -- requests ------------------------------------------------------------------------------

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with a fresh ref; return the frame answering it (raise on `error`)."""
        ws = await self._wait_connected()
        ref = f"c{next(self._refs)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await ws.send_str(orjson.dumps({**frame, "ref": ref}).decode())
            reply = await asyncio.wait_for(future, self.request_timeout)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ConnectionLost(f"connection lost: {exc}") from exc
        except TimeoutError:
            raise RequestTimeout(f"no answer to {frame.get('op')!r} within "
                                 f"{self.request_timeout:g} s") from None
        finally:
            self._pending.pop(ref, None)
        if reply.get("op") == "error":
            raise server_error(reply)
        return reply

    async def join(self, room: str, after: int | None = None) -> Joined:
        """Join a room; with `after`, missed messages come through `messages()` first (all
        of them: a resume the server truncates is completed from history)."""
        frame: dict[str, Any] = {"op": "join", "room": room}
        if after is not None:
            frame["after"] = after
        joined = cast(Joined, await self.request(frame))
        self._rooms.setdefault(room, after if after is not None else joined["seq"])
        if joined.get("truncated"):
            # In the background: the caller may be the one who must drain `messages()`.
            self._spawn(self._catch_up(room, joined["seq"]))
        return joined

    async def leave(self, room: str) -> None:
        """Stop receiving a room's messages (membership stays); it is not re-joined."""
        self._rooms.pop(room, None)
        await self.request({"op": "leave", "room": room})

    async def send(self, room: str, text: str) -> Ack:
        """Send a message; returns the `ack` (`seq`, `id`, `ts`) once it is durable."""
        return cast(Ack, await self.request({"op": "send", "room": room, "text": text}))

    async def ping(self) -> float:
        """Application round trip through the server's send queue, in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.request({"op": "ping"})
        return loop.time() - started

    @contextlib.asynccontextmanager
    async def stream(self, room: str) -> AsyncIterator[Stream]:
        """Stream one message to `room`: `write()` pieces inside the block; leaving it stores
        the whole text as one message (`stream.ack`), or nothing if nothing was written.

        If the block raises: with nothing written the stream is discarded; with text written
        it is left to the server, which stores the text so far marked `aborted` when the
        connection closes or after `limits.stream_idle` seconds (the protocol has no op to
        abort a stream)."""
        stream = await self.start_stream(room)
        try:
            yield stream
        except BaseException:
            await stream._give_up()
            raise
        await stream.end()

    async def start_stream(self, room: str) -> Stream:
        """Start a stream without the context manager; call `end()` on it."""
        generation = self._generation
        ack = await self.request({"op": "stream_start", "room": room})
        stream = Stream(self, room, str(ack["stream"]), generation, f"s{next(self._refs)}")
        self._streams[stream.ref] = stream
        return stream

    def messages(self) -> AsyncIterator[Message]:
        """Every `message` of joined rooms, once each, in seq order per room. It ends after
        `close()`, and raises `AuthenticationFailed` if a reconnect was refused for good.

        Read it: the client holds at most MESSAGE_QUEUE_MAX messages, then stops reading the
        socket (acks wait too) until it is drained.

        Waiting on it with a timeout (`asyncio.wait_for(anext(it), 5)`) is safe: a wait that
        times out takes nothing, and the iterator goes on. (An async generator would be
        closed by that cancellation and end for good.)"""
        return _MessageIterator(self)

    async def history(self, room: str, *, before: int | None = None, after: int | None = None,
                      limit: int | None = None) -> HistoryPage:
        """One page of `room`'s history over HTTP (`GET /api/rooms/{room}/messages`); needs
        no `connect()`. `before` pages back from a seq, `after` forward; default the latest."""
        params = {key: str(value) for key, value in
                  (("before", before), ("after", after), ("limit", limit)) if value is not None}
        return cast(HistoryPage, await self._http_get(
            f"/api/rooms/{quote(room, safe='')}/messages", params))

    # -- HTTP -----------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _http_get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        base = http_url(self.url)
        try:
            async with self._http().get(
                    base + path, params=params,
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=aiohttp.ClientTimeout(total=self.request_timeout)) as reply:
                status, raw, headers = reply.status, await reply.read(), reply.headers
        except TimeoutError:
            raise RequestTimeout(f"no answer from {base} within "
                                 f"{self.request_timeout:g} s") from None
        except (OSError, aiohttp.ClientError) as exc:
            raise Unreachable(f"cannot reach {base}: {exc}") from exc
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise ServerError({"code": "internal", "message": f"{base}{path} answered HTTP "
                               f"{status} without a JSON object; is the URL right?"})
        if status >= 400:
            hint = _retry_after(headers)
            if hint is not None:
                body.setdefault("retry_after", hint)
            raise server_error(body)
        return body

    # -- the connection ---------------------------------------------------------------------

    async def _open_with_backoff(self, *, immediately: bool, close_code: int | None = None,
                                 deadline: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        retry_after: float | None = None
        last = "no attempt yet"
        while True:
            if immediately and attempt == 0:
                delay = 0.0
            else:
                index = attempt - 1 if immediately else attempt
                delay = reconnect_delay(
                    index, base=self.backoff_base, cap=self.backoff_cap,
                    close_code=close_code if index == 0 else None, retry_after=retry_after,
                    spread=self.going_away_delay)
            if deadline is not None and loop.time() + delay > deadline:
                raise Unreachable(f"could not connect to {self.url}: {last}",
                                  retry_after=retry_after)
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._open()
                return
            except aiohttp.WSServerHandshakeError as exc:
                retry_after = _retry_after(exc.headers)
                if exc.status in (401, 403):
                    raise AuthenticationFailed({
                        "code": "unauthorized", "message":
                        f"{self.url} refused the token (HTTP {exc.status})"}) from None
                if not (exc.status in (408, 429) or exc.status >= 500):
                    raise Unreachable(f"{self.url} answered the WebSocket upgrade with HTTP "
                                      f"{exc.status}; is the URL right?",
                                      status=exc.status) from None
                last = f"HTTP {exc.status}" + (
                    f", retry after {retry_after:g} s" if retry_after is not None else "")
            except aiohttp.InvalidURL as exc:
                raise Unreachable(f"bad server URL {self.url!r}: {exc}") from None
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                last = str(exc) or type(exc).__name__
                retry_after = None
            log.info("connect to %s failed: %s", self.url, last)
            self._url_index += 1
            attempt += 1

    async def _open(self) -> None:
        ws = await self._http().ws_connect(
            self.url, headers={"Authorization": f"Bearer {self.token}"}, heartbeat=None,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        try:
            hello = await asyncio.wait_for(ws.receive(), 10)
        except BaseException:
            await ws.close()
            raise
        if hello.type is not aiohttp.WSMsgType.TEXT:
            await ws.close()
            raise aiohttp.ClientError(f"no hello from {self.url}")
        self.hello = orjson.loads(hello.data)
        self._ws = ws
        self._generation += 1
        self._connected = True

    async def _run(self) -> None:
        while not self._closed:
            rejoin = asyncio.get_running_loop().create_task(self._rejoin())
            self._ready.set()
            code = await self._read()
            rejoin.cancel()
            self._connected = False
            self._ready.clear()
            self._catching_up.clear()  # the next re-join resumes from the last delivered seq
            self._fail_pending(ConnectionLost(f"connection closed ({code})"))
            if self._closed:
                return
            self.reconnects += 1
            self._url_index += 1
            try:
                await self._open_with_backoff(immediately=False, close_code=code)
            except ChatClientError as exc:  # refused for good: a revoked token, a wrong URL
                log.warning("giving up reconnecting: %s", exc)
                self._failure = exc
                self._ready.set()
                self._end_messages()
                return

    async def _wait_connected(self) -> aiohttp.ClientWebSocketResponse:
        if self._runner is None and not self._closed:
            raise ChatClientError("not connected: use `async with ChatClient(...)` or call "
                                  "connect() first", code="not_connected")
        await self._ready.wait()
        if self._failure is not None:
            raise self._failure
        if self._closed or self._ws is None:
            raise ConnectionLost("the client is closed (or was never connected)")
        return self._ws

    async def _rejoin(self) -> None:
        for room, last in list(self._rooms.items()):
            try:
                joined = await self.request({"op": "join", "room": room, "after": last})
            except ServerError as exc:  # this room only (e.g. no longer allowed)
                log.warning("re-joining %s failed: %s", room, exc)
                continue
            except ChatClientError as exc:
                log.info("re-joining %s failed: %s", room, exc)
                return
            if joined.get("truncated"):
                await self._catch_up(room, int(joined["seq"]))

    async def _catch_up(self, room: str, until: int) -> None:
        """Page a truncated resume forward from history while live frames of the room wait
        (set aside by `_dispatch` on the `joined`), then release them: no gap, no duplicate."""
        held = self._catching_up.setdefault(room, [])
        try:
            while self._rooms.get(room, 0) < until:
                page = await self.request({"op": "history", "room": room,
                                           "after": self._rooms.get(room, 0),
                                           "limit": HISTORY_PAGE_MAX})
                for message in page["messages"]:
                    await self._accept(message)
                if not page["more"] or not page["messages"]:
                    break
            while held:  # nothing new is held between this check and the release below
                await self._accept(held.pop(0))
        except ChatClientError as exc:
            log.warning("completing the resume of %s failed: %s", room, exc)
        finally:
            if self._catching_up.get(room) is held:
                del self._catching_up[room]

    async def _read(self) -> int | None:
        ws = self._ws
        assert ws is not None
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            if frame.get("op") == "message":
                held = self._catching_up.get(frame["room"])
                if held is not None:
                    held.append(frame)
                else:
                    await self._accept(frame)
            else:
                self._dispatch(frame)
        return ws.close_code

    async def _accept(self, frame: dict[str, Any]) -> None:
        room, seq = frame["room"], frame["seq"]
        last = self._rooms.get(room)
        if last is not None and seq <= last:
            return  # already delivered before a reconnect
        self._rooms[room] = seq
        # Waiting here stops reading the socket: back-pressure instead of an unbounded queue.
        await self._messages.put(frame)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "joined" and frame.get("truncated"):
            # Set aside live frames from now on, before the joiner's coroutine even resumes.
            self._catching_up.setdefault(frame["room"], [])
        ref = frame.get("ref")
        if ref is None:
            return
        future = self._pending.get(ref)
        if future is not None and not future.done():
            future.set_result(frame)
        elif op == "error" and ref in self._streams:
            self._streams[ref]._refused(server_error(frame))

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _end_messages(self) -> None:
        if self._messages.empty():
            self._messages.put_nowait(None)  # wakes a waiting iterator to see the end

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ws_for(self, generation: int) -> aiohttp.ClientWebSocketResponse:
        if self._failure is not None:
            raise self._failure
        if self._ws is None or not self._connected or generation != self._generation:
            raise ConnectionLost("the connection dropped mid-stream; the server keeps the "
                                 "text so far as a message marked aborted")
        return self._ws


class Stream:
    """One message being streamed to a room (from `ChatClient.stream()`)."""

    def __init__(self, client: ChatClient, room: str, stream_id: str, generation: int,
                 ref: str) -> None:
        self.room = room
        self.id = stream_id
        self.ref = ref  # every delta carries it, so the server's refusal of one comes back
        self.ack: Ack | None = None  # set by `end()` unless the stream was discarded
        self.discarded = False
        self.ended = False
        self.bytes_written = 0
        self._client = client
        self._generation = generation
        self._error: ServerError | None = None

    async def write(self, text: str) -> None:
        """Append text; readers see it at once. Raises the server's refusal of an earlier
        piece, `TooLarge` (nothing sent) past `max_message_bytes`, or `ConnectionLost`."""
        if self.ended:
            raise ChatClientError(f"stream {self.id} has ended", code="stream_ended")
        self._raise_refusal()
        if not text:
            return  # the server refuses empty deltas; an empty piece changes nothing
        size = len(text.encode("utf-8"))
        limit = self._client.hello.get("limits", {}).get("max_message_bytes")
        if isinstance(limit, int) and self.bytes_written + size > limit:
            raise TooLarge({"code": "too_large", "message":
                            f"the streamed text would pass max_message_bytes ({limit} bytes); "
                            f"this piece ({size} bytes) was not sent"})
        ws = self._client._ws_for(self._generation)
        # Counted when sent: a piece the server later refuses still counts here, so this
        # check errs on the strict side (the refusal does not say which piece it was).
        frame = {"op": "stream_delta", "stream": self.id, "text": text, "ref": self.ref}
        try:
            await ws.send_str(orjson.dumps(frame).decode())
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ConnectionLost(f"connection lost mid-stream: {exc}") from exc
        self.bytes_written += size

    async def end(self) -> Ack | None:
        """Store the whole text as one message and return its ack; None if nothing was
        written (the server discards the stream and stores nothing)."""
        if self.ended:
            return self.ack
        self._client._ws_for(self._generation)
        try:
            reply = await self._client.request({"op": "stream_end", "stream": self.id})
        finally:
            self.ended = True
            self._client._streams.pop(self.ref, None)
        if reply.get("discarded"):
            self.discarded = True
        else:
            self.ack = cast(Ack, reply)
        # Replies come in order: a refused delta's error arrived before this ack.
        self._raise_refusal()
        return self.ack

    def _refused(self, error: ServerError) -> None:
        if self._error is None:
            self._error = error

    def _raise_refusal(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    async def _give_up(self) -> None:
        """The `stream()` block raised: discard the stream if nothing was written; otherwise
        leave it to the server, which stores the text so far marked `aborted`."""
        if self.ended or self.bytes_written:
            self._client._streams.pop(self.ref, None)
            return
        with contextlib.suppress(ChatClientError, TimeoutError):
            await asyncio.wait_for(self.end(), STREAM_GIVE_UP_TIMEOUT)


class _MessageIterator:
    """An endless async iterator over the client's messages; a cancelled `__anext__` loses
    no item. `None` in the queue only wakes a waiter to look at the client's end."""

    def __init__(self, client: ChatClient) -> None:
        self._client = client

    def __aiter__(self) -> _MessageIterator:
        return self

    async def __anext__(self) -> Message:
        client, queue = self._client, self._client._messages
        while True:
            if queue.empty() and (client._closed or client._failure is not None):
                queue.put_nowait(None)  # so every other waiting iterator wakes too
                if client._failure is not None:
                    raise client._failure
                raise StopAsyncIteration
            item = await queue.get()
            if item is not None:
                return cast(Message, item)
