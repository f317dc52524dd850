"""`ChatClient`: one connection to chatserver that survives reconnects — requests and their
replies, re-joining rooms with `after`, and delivering each room's log (messages, edits,
deletions, reactions) once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, Literal, cast
from urllib.parse import quote

import aiohttp
import orjson

from .backoff import AFTER_SERVER_HINT, BACKOFF_BASE, BACKOFF_CAP, _retry_after, reconnect_delay
from .errors import (
    AuthenticationFailed,
    ChatClientError,
    ConnectionLost,
    RequestTimeout,
    ServerError,
    Unreachable,
    server_error,
)
from .frames import Ack, Event, EventAck, HistoryPage, Joined, Message, ReactionAck, SearchPage
from .http import get_json
from .iterators import EventIterator, MessageIterator
from .stream import Stream
from .urls import http_url, websocket_url

# Frames that take a seq in a room's log (docs/protocol.md §10, "Room events"): each moves
# the point a resume (`join after`) continues from, or a reconnect would replay them.
ROOM_LOG_OPS = frozenset({"message", "edited", "deleted", "reaction"})

log = logging.getLogger("chatserver.client")  # the package's name, as before the split

MESSAGE_QUEUE_MAX = 10_000  # room-log frames held for `messages()` / `events()`
HISTORY_PAGE_MAX = 200  # the server's largest history page
SEARCH_LIMIT = 20  # the server's default search page (at most 50)


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
        # Rooms whose truncated resume is being completed: their live frames are dropped from
        # the truncated `joined` until the `left` that precedes the re-join (which replays them).
        self._skipping: set[str] = set()
        # Room-log frames for the iterators; `_view` is the kind of the first one made (a
        # client reads its rooms through `messages()` or `events()`, not both).
        self._log: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(MESSAGE_QUEUE_MAX)
        self._view: Literal["messages", "events"] | None = None
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
        """Close the connection; `messages()` / `events()` end once they have yielded what
        they hold."""
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
        self._end_log()

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
        """Join a room; with `after`, missed messages (and events) come through `messages()`
        (`events()`) first — all of them: a resume the server truncates is completed by
        re-joining where its replay stopped."""
        frame: dict[str, Any] = {"op": "join", "room": room}
        if after is not None:
            frame["after"] = after
        joined = cast(Joined, await self.request(frame))
        self._rooms.setdefault(room, after if after is not None else joined["seq"])
        if joined.get("truncated"):
            # In the background: the caller may be the one who must drain `messages()`.
            self._spawn(self._complete_resume(room))
        return joined

    async def leave(self, room: str) -> None:
        """Stop receiving a room's messages (membership stays); it is not re-joined."""
        self._rooms.pop(room, None)
        await self.request({"op": "leave", "room": room})

    async def send(self, room: str, text: str, *, thread: int | None = None) -> Ack:
        """Send a message (a reply in the thread of the message with seq `thread`, when
        given); returns the `ack` (`seq`, `id`, `ts`) once it is durable."""
        frame: dict[str, Any] = {"op": "send", "room": room, "text": text}
        if thread is not None:
            frame["thread"] = thread
        return cast(Ack, await self.request(frame))

    async def edit(self, room: str, seq: int, text: str) -> EventAck:
        """Replace the text of message `seq` (your own; an admin's, anyone's). Returns once
        the edit is durable: the ack's `seq` is the edit's own seq in the room's log,
        `target` the message's. Raises `Forbidden` (someone else's message), `NotFound` (no
        such message in the room, deleted, or a stream not yet ended), `TooLarge`."""
        return cast(EventAck, await self.request(
            {"op": "edit", "room": room, "seq": seq, "text": text}))

    async def delete(self, room: str, seq: int) -> EventAck:
        """Delete message `seq` (your own; an admin's, anyone's): its text, reactions and
        file are erased. Returns the ack once durable (`seq`: the deletion's, `target`: the
        message's); raises as `edit` does."""
        return cast(EventAck, await self.request({"op": "delete", "room": room, "seq": seq}))

    async def react(self, room: str, seq: int, emoji: str, *, remove: bool = False
                    ) -> ReactionAck:
        """Add your reaction `emoji` (one emoji, or a `:short_name:`) to message `seq`, or
        with `remove` take it back. The ack's `changed` is False when there was nothing to
        do (you had that reaction already, or had none to remove): then nothing is stored
        and the ack has no `seq`. A bad emoji raises `ServerError` `bad_request`."""
        frame: dict[str, Any] = {"op": "react", "room": room, "seq": seq, "emoji": emoji}
        if remove:
            frame["remove"] = True
        return cast(ReactionAck, await self.request(frame))

    async def read(self, room: str, seq: int) -> int:
        """Mark `room` read up to `seq` (for the user, on every device); returns the read
        position now. It only moves forward and is clamped to the room's latest seq, so the
        answer may differ from `seq`."""
        reply = await self.request({"op": "read", "room": room, "seq": seq})
        return int(reply["seq"])

    async def ping(self) -> float:
        """Application round trip through the server's send queue, in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.request({"op": "ping"})
        return loop.time() - started

    @contextlib.asynccontextmanager
    async def stream(self, room: str, *, thread: int | None = None) -> AsyncIterator[Stream]:
        """Stream one message to `room`: `write()` pieces inside the block; leaving it stores
        the whole text as one message (`stream.ack`), or nothing if nothing was written.
        With `thread` (a top-level message's seq) the message is a reply in that thread.

        If the block raises: with nothing written the stream is discarded; with text written
        it is left to the server, which stores the text so far marked `aborted` when the
        connection closes or after `limits.stream_idle` seconds (the protocol has no op to
        abort a stream)."""
        stream = await self.start_stream(room, thread=thread)
        try:
            yield stream
        except BaseException:
            await stream._give_up()
            raise
        await stream.end()

    async def start_stream(self, room: str, *, thread: int | None = None) -> Stream:
        """Start a stream without the context manager (`thread` as for `stream()`); call
        `end()` on it."""
        generation = self._generation
        frame: dict[str, Any] = {"op": "stream_start", "room": room}
        if thread is not None:
            frame["thread"] = thread
        ack = await self.request(frame)
        stream = Stream(self, room, str(ack["stream"]), generation, f"s{next(self._refs)}",
                        thread=thread)
        self._streams[stream.ref] = stream
        return stream

    def messages(self) -> AsyncIterator[Message]:
        """Every `message` of joined rooms, once each, in seq order per room. It ends after
        `close()`, and raises `AuthenticationFailed` if a reconnect was refused for good.

        Read it: the client holds at most MESSAGE_QUEUE_MAX messages, then stops reading the
        socket (acks wait too) until it is drained.

        Waiting on it with a timeout (`asyncio.wait_for(anext(it), 5)`) is safe: a wait that
        times out takes nothing, and the iterator goes on. (An async generator would be
        closed by that cancellation and end for good.)

        A client reads its rooms through `messages()` or `events()`, not both: once one has
        been called, calling the other raises `ChatClientError` (code `iterator_conflict`).
        Several iterators of one kind share the frames (each goes to one of them)."""
        self._choose_view("messages")
        return MessageIterator(self)

    def events(self) -> AsyncIterator[Event]:
        """Every frame of joined rooms' logs — `message`, `edited`, `deleted`, `reaction` —
        once each, in seq order per room, live and replayed alike (a resume delivers the
        events missed too, with no gap or duplicate); `op` tells them apart. Everything
        `messages()` says holds, including that a client uses one of the two (the first
        called); the MESSAGE_QUEUE_MAX bound counts events here."""
        self._choose_view("events")
        return EventIterator(self)

    def _choose_view(self, view: Literal["messages", "events"]) -> None:
        if self._view is None:
            self._view = view
        elif self._view != view:
            raise ChatClientError(
                f"this client's rooms are read through {self._view}(); a client uses "
                f"messages() or events(), not both (events() yields the messages too)",
                code="iterator_conflict")

    async def history(self, room: str, *, before: int | None = None, after: int | None = None,
                      limit: int | None = None, thread: int | None = None) -> HistoryPage:
        """One page of `room`'s history over HTTP (`GET /api/rooms/{room}/messages`); needs
        no `connect()`. `before` pages back from a seq, `after` forward; default the latest.
        With `thread` (a root's seq), that thread's replies."""
        params = {key: str(value) for key, value in
                  (("before", before), ("after", after), ("limit", limit), ("thread", thread))
                  if value is not None}
        return cast(HistoryPage, await self._http_get(
            f"/api/rooms/{quote(room, safe='')}/messages", params))

    async def search(self, query: str, *, room: str | None = None, before: str | None = None,
                     limit: int = SEARCH_LIMIT) -> SearchPage:
        """One page of full-text search results over HTTP (`GET /api/search`), in the rooms
        the user may read (with `room`, that room only); needs no `connect()`. Pass a page's
        `next` as `before` for the next one; `limit` is 1–50. A query the server cannot use
        (no letter or digit, too long, a prefix shorter than 3) raises `ServerError`
        `bad_request` with the reason; an unreadable `room` `NotFound` / `Forbidden`."""
        params = {"q": query, "limit": str(limit)}
        if room is not None:
            params["room"] = room
        if before is not None:
            params["before"] = before
        return cast(SearchPage, await self._http_get("/api/search", params))

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
        return await get_json(self._http(), base, path, params, token=self.token,
                              timeout=self.request_timeout)

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
            self._skipping.clear()  # the next re-join resumes from the last delivered seq
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
                self._end_log()
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
                await self._complete_resume(room)

    async def _complete_resume(self, room: str) -> None:
        """Complete a truncated resume. The server replayed `replay_max` frames of the room's
        log and went live past the rest; history would give the messages missed but not the
        edits, deletions and reactions, so leave and re-join after the last frame received,
        until a join is not truncated. `_dispatch` drops the room's live frames from the
        truncated `joined` until the `left` (the re-join replays them), and a connection
        handles frames in order, so every frame comes once, in seq order."""
        try:
            while room in self._rooms:
                await self.request({"op": "leave", "room": room})
                after = self._rooms.get(room)
                if after is None:
                    return  # left by the caller meanwhile
                joined = await self.request({"op": "join", "room": room, "after": after})
                if room not in self._rooms:  # left by the caller while re-joining
                    await self.request({"op": "leave", "room": room})
                    return
                if not joined.get("truncated"):
                    return
        except ChatClientError as exc:
            # A lost connection resumes from the last frame received; a refusal is logged
            # like a failed re-join.
            log.warning("completing the resume of %s failed: %s", room, exc)

    async def _read(self) -> int | None:
        ws = self._ws
        assert ws is not None
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            if frame.get("op") in ROOM_LOG_OPS:
                if frame["room"] not in self._skipping:
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
        if frame["op"] != "message" and self._view == "messages":
            return  # an edit, deletion or reaction moves the resume point, and history shows
            #         its effect; `messages()` yields messages only (it skips those queued
            #         before it was chosen)
        # Waiting here stops reading the socket: back-pressure instead of an unbounded queue.
        await self._log.put(frame)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "joined" and frame.get("truncated"):
            # Drop live frames from now on, before the joiner's coroutine even resumes: the
            # re-join that completes the resume replays them (`_complete_resume`).
            self._skipping.add(frame["room"])
        elif op == "left":
            self._skipping.discard(frame["room"])  # the room's next frames are the re-join's
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

    def _end_log(self) -> None:
        if self._log.empty():
            self._log.put_nowait(None)  # wakes a waiting iterator to see the end

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
