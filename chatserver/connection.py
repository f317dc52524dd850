"""The WebSocket handler: authenticate before the upgrade, then read, dispatch, clean up.

The handler task is the only reader of the socket; the outbox's writer task is its only writer
(aiohttp itself also answers pings and sends the 1009 close for an oversized frame).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from aiohttp import WSMsgType, web

from chatserver import handlers, protocol
from chatserver.app_keys import CONTEXT
from chatserver.auth import authenticate
from chatserver.broker.base import presence_event
from chatserver.context import ChatContext
from chatserver.errors import ChatError, CloseCode, Unavailable
from chatserver.outbox import Outbox
from chatserver.session import Session

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0  # seconds a close handshake may take before the socket is dropped
WRITER_EXIT_TIMEOUT = 5.0


class WebSocketSink:
    """The outbox's view of an aiohttp WebSocket: frames it built go straight to the
    transport, and back-pressure is the transport's (aiohttp's protocol pauses writing past
    the transport's high-water mark)."""

    # Slots: the flusher touches every recipient's sink once per pass, right after the
    # kernel's send path has churned the caches; fewer objects per sink, fewer misses.
    __slots__ = ("_ws", "_request", "_protocol", "_transport")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._ws = ws
        self._request = request
        self._protocol = request.protocol
        # Looked up once: aiohttp's `request.transport` is a property walk per call, and this
        # runs once per recipient socket per flusher pass. A lost connection's transport
        # stays this object and reports is_closing().
        self._transport = request.transport

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        transport.write(data)

    def backed_up(self) -> bool:
        return self._protocol.writing_paused

    async def drain(self) -> None:
        # aiohttp's drain waiter is shared with its own writes (the close frame): shielded, a
        # cancelled writer (eviction) does not leave it cancelled for them.
        await asyncio.shield(self._protocol._drain_helper())

    async def close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self._ws.close(code=code, message=reason.encode("utf-8")), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError):
            self.abort(code, reason)
            return
        # aiohttp falls back to a graceful transport close when the close frame cannot be
        # written; with data still unsent to a peer that does not read, that waits forever.
        transport = self._request.transport
        if transport is not None and transport.get_write_buffer_size() > 0:
            transport.abort()

    def abort(self, code: int, reason: str) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > 0:
            transport.abort()
            return
        # The socket has room: say why in a close frame, then give the peer a moment to
        # read it before the socket is dropped regardless.
        payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:123]
        transport.write(bytes([0x88, len(payload)]) + payload)
        transport.close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    limits = ctx.config.limits
    if ctx.shutting_down:
        raise Unavailable("the server is shutting down; reconnect (elsewhere) shortly",
                          retry_after=_jittered(1, 5))
    if not ctx.overload.allow_connection():
        raise Unavailable("this instance is overloaded; retry shortly (or elsewhere)",
                          retry_after=_jittered(1, 5))
    if len(ctx.connections) >= limits.connections_per_instance:
        raise Unavailable("this instance is at its connection limit; retry shortly",
                          retry_after=_jittered(1, 10))
    info = await authenticate(ctx, request, websocket=True)
    if ctx.connections.count_of_user(info.user.id) >= limits.connections_per_user:
        raise Unavailable(f"user {info.user.name!r} already has "
                          f"{limits.connections_per_user} connections open here; close one",
                          retry_after=5)
    ws = web.WebSocketResponse(
        heartbeat=ctx.config.server.heartbeat,
        max_msg_size=limits.max_frame_bytes,
        compress=False,  # one encoded frame serves every recipient; see docs/protocol.md
    )
    await ws.prepare(request)
    outbox = Outbox(limits.send_queue_bytes, ctx.flusher)
    session = Session(info.user, info.token_hash, outbox)
    writer = asyncio.get_running_loop().create_task(outbox.run(WebSocketSink(ws, request)))
    ctx.connections.add(session)
    outbox.enqueue(_hello(ctx, session))
    ctx.metrics.frames_out["hello"] += 1
    started = time.monotonic()
    log.info("connection opened user=%s conn=%s", session.user.name, session.conn_id,
             extra={"event": "connection_opened", "user": session.user.name,
                    "conn": session.conn_id})
    try:
        await _announce(ctx, session, online=True)
        await _read_loop(ctx, session, ws)
    finally:
        # Cleanup must finish even if this handler is cancelled (client gone, shutdown):
        # run it as its own task that a cancellation of the handler does not reach.
        cleanup = asyncio.get_running_loop().create_task(
            _cleanup(ctx, session, writer, ws, started))
        ctx.background.add(cleanup)
        cleanup.add_done_callback(ctx.background.discard)
        await asyncio.shield(cleanup)
    return ws


def _jittered(low: float, high: float) -> float:
    """A Retry-After that spreads a crowd of reconnecting clients over a window."""
    return random.uniform(low, high)


def _hello(ctx: ChatContext, session: Session) -> bytes:
    limits = ctx.config.limits
    return protocol.encode({
        "op": "hello", "user": session.user.name, "conn": session.conn_id,
        "instance": ctx.instance_id, "heartbeat": _number(ctx.config.server.heartbeat),
        "limits": {
            "max_message_bytes": limits.max_message_bytes,
            "max_frame_bytes": limits.max_frame_bytes,
            "rate": {"per_second": _number(limits.rate.per_second), "burst": limits.rate.burst},
        },
    })


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


async def _read_loop(ctx: ChatContext, session: Session, ws: web.WebSocketResponse) -> None:
    outbox = session.outbox
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            data = msg.data
            session.bytes_in += len(data) if data.isascii() else len(data.encode("utf-8"))
            await handlers.handle_frame(ctx, session, data)
        elif msg.type is WSMsgType.BINARY:
            ctx.metrics.frames_in["binary"] += 1
            outbox.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported; "
                         "send JSON text frames")
            return
        elif msg.type is WSMsgType.ERROR:
            log.info("conn %s: %s", session.conn_id, ws.exception())
            return
        if outbox.closing:
            return


async def _announce(ctx: ChatContext, session: Session, *, online: bool) -> None:
    """Presence: tell the user's rooms when their first connection opens or last one closes."""
    user = session.user
    try:
        if online:
            changed = await ctx.broker.connection_opened(user.name, session.conn_id)
        else:
            changed = await ctx.broker.connection_closed(user.name, session.conn_id)
        if not changed:
            return
        rooms = tuple(await ctx.store.rooms_of_user(user.id))
    except ChatError as error:
        log.warning("presence for %s not announced: %s", user.name, error.message)
        return
    if not ctx.overload.allow_ephemeral():
        return  # shed under overload (the bookkeeping above still happened)
    status = "online" if online else "offline"
    ctx.broker.publish(presence_event(user.name, status, rooms))


async def _cleanup(ctx: ChatContext, session: Session, writer: asyncio.Task[None],
                   ws: web.WebSocketResponse, started: float) -> None:
    ctx.connections.remove(session)
    ctx.connections.cleaning_up += 1
    try:
        await _release(ctx, session, writer)
    finally:
        ctx.connections.cleaning_up -= 1
        outbox = session.outbox
        code = outbox.close_code or ws.close_code
        ctx.connections.record_close(outbox, code)
    duration = time.monotonic() - started
    log.info("connection closed user=%s conn=%s duration=%.1fs frames_in=%d bytes_in=%d "
             "frames_out=%d bytes_out=%d code=%s", session.user.name, session.conn_id,
             duration, session.frames_in, session.bytes_in, outbox.frames_out,
             outbox.bytes_out, code,
             extra={"event": "connection_closed", "user": session.user.name,
                    "conn": session.conn_id, "duration_seconds": round(duration, 3),
                    "frames_in": session.frames_in, "bytes_in": session.bytes_in,
                    "frames_out": outbox.frames_out, "bytes_out": outbox.bytes_out,
                    "code": code})


async def _release(ctx: ChatContext, session: Session, writer: asyncio.Task[None]) -> None:
    ctx.hub.leave_all(session.conn_id, list(session.rooms))
    session.rooms.clear()
    session.outbox.close(CloseCode.NORMAL)
    try:
        await asyncio.wait_for(asyncio.shield(writer), WRITER_EXIT_TIMEOUT)
    except TimeoutError:
        writer.cancel()
    except Exception as exc:
        log.debug("writer ended with %r", exc)
    await ctx.streams.abort_connection(session.conn_id)
    await _announce(ctx, session, online=False)
