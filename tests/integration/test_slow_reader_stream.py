"""PROTOCOL "Back-pressure": a 500 deltas/s stream reaches a slow reader coalesced and complete,
over real sockets, while a fast reader in the same room gets it delta by delta."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections import deque
from typing import Any

import orjson

from tests.integration.conftest import ChatFactory, WsClient

DELTAS_PER_SECOND = 500
DELTA_COUNT = 2000  # four seconds of streaming
DELTA_BYTES = 300
# Where the stream's bytes wait for the slow reader, in order: its kernel receive buffer, the
# server's kernel send buffer, the server's transport buffer (past its 64 KiB high-water mark
# the outbox stops writing, although aiohttp's own WebSocket writer looks only every 256 KiB),
# and only then the outbox, which joins deltas once 64 KiB are queued there. On loopback (MSS
# 64 KiB) the server's send buffer autotunes to 4 MiB and would absorb the whole stream; the
# slow reader's tiny window and small MSS (set before connecting, like a phone on a poor link)
# keep it near 50-90 KB, so coalescing starts 1-2 s into the four seconds.
SLOW_RCVBUF = 2048
SLOW_MSS = 536
# A few KB taken every 100 ms: 20 KB/s against a stream of ~190 KB/s.
SLOW_READ_BYTES = 2048
SLOW_READ_INTERVAL = 0.1
READ_TIMEOUT = 60.0

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


class _ServerFrames:
    """Splits what a server sent into WebSocket frames (RFC 6455 5.2): unmasked, unfragmented
    (aiohttp never fragments), with 7-, 16- or 64-bit payload lengths."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The complete frames `data` finishes, as (opcode, payload); keeps any partial one."""
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        assert first & 0x80, "a fragmented frame"
        assert not second & 0x80, "a masked frame from the server"
        length, start = second & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start + length:  # also covers an incomplete extended length
            return None
        payload = bytes(buffer[start:start + length])
        del buffer[:start + length]
        return first & 0x0F, payload


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (clients must mask); short payloads only, as this test needs."""
    assert len(payload) < 126
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


class _SlowReader:
    """A raw WebSocket client with a small receive window that reads a little at a time
    (until told to drain), recording every text frame and any close code."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.drain = asyncio.Event()
        self._parser = _ServerFrames()
        self._pending: deque[tuple[int, bytes]] = deque(self._parser.feed(leftover))

    @classmethod
    async def connect(cls, port: int, token: str) -> _SlowReader:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        # Both must be set before connect: the window and MSS are fixed in the handshake.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SLOW_MSS)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), READ_TIMEOUT)
            assert chunk, received
            received += chunk
        head, _, leftover = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(sock, leftover)

    async def send(self, frame: dict[str, Any]) -> None:
        await asyncio.get_running_loop().sock_sendall(
            self.sock, _client_frame(OP_TEXT, orjson.dumps(frame)))

    async def read_until(self, op: str, **fields: Any) -> dict[str, Any]:
        """Read (slowly unless `drain` is set) up to the first frame with `op` and `fields`."""
        loop = asyncio.get_running_loop()
        while True:
            while self._pending:
                opcode, payload = self._pending.popleft()
                if opcode == OP_CLOSE:
                    self.close_code = int.from_bytes(payload[:2], "big")
                    raise AssertionError(f"closed with {self.close_code}: {payload[2:]!r}")
                if opcode == OP_PING:
                    await loop.sock_sendall(self.sock, _client_frame(OP_PONG, payload))
                if opcode != OP_TEXT:
                    continue
                frame: dict[str, Any] = orjson.loads(payload)
                self.frames.append(frame)
                if frame["op"] == op and all(frame.get(k) == v for k, v in fields.items()):
                    return frame
            if self.drain.is_set():
                data = await loop.sock_recv(self.sock, 1 << 20)
            else:
                # A slow link: a little now, then nothing for a while (cut short by `drain`).
                data = await loop.sock_recv(self.sock, SLOW_READ_BYTES)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.drain.wait(), SLOW_READ_INTERVAL)
            assert data, "the server closed the socket without a close frame"
            self._pending.extend(self._parser.feed(data))


async def _stream_at_rate(streamer: WsClient, stream: str, deltas: list[str]) -> float:
    """Send `deltas` at DELTAS_PER_SECOND on a fixed schedule (catching up after a slow loop
    step rather than drifting); the seconds it took."""
    started = time.monotonic()
    for i, text in enumerate(deltas):
        delay = started + i / DELTAS_PER_SECOND - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await streamer.send({"op": "stream_delta", "stream": stream, "text": text})
    return time.monotonic() - started


async def _collect_stream(reader: WsClient, stream: str) -> list[dict[str, Any]]:
    """Every frame up to and including the stream's stored message."""
    frames: list[dict[str, Any]] = []
    while not (frames and frames[-1]["op"] == "message" and frames[-1].get("stream") == stream):
        frames.append(await reader.recv(timeout=READ_TIMEOUT))
    return frames


def _assert_whole_stream(frames: list[dict[str, Any]], stream: str, deltas: list[str]
                         ) -> list[str]:
    """The stream's frames are `stream_start`, deltas, then its stored message; the deltas'
    texts together are exactly the streamed text, each one a run of whole consecutive deltas
    (joined, never split or reordered). Returns those texts."""
    ours = [f for f in frames if f.get("stream") == stream]
    assert ours[0]["op"] == "stream_start" and ours[-1]["op"] == "message", ours[:1] + ours[-1:]
    assert all(f["op"] == "stream_delta" for f in ours[1:-1])
    texts = [f["text"] for f in ours[1:-1]]
    assert "".join(texts) == "".join(deltas)
    sent_ends: set[int] = set()
    end = 0
    for delta in deltas:
        end += len(delta)
        sent_ends.add(end)
    end = 0
    for text in texts:
        end += len(text)
        assert end in sent_ends, f"a received delta ends inside a sent one (at char {end})"
    return texts


async def test_a_500_per_second_stream_reaches_a_slow_reader_coalesced_and_complete(
        make_chat: ChatFactory) -> None:
    """A reader on a slow link gets a 500 deltas/s stream in fewer, larger deltas whose text
    is exactly the streamed text, stays connected (no 1013), and gets the stored message;
    a fast reader in the same room gets every delta, in order."""
    # The bound only has to stay out of the way: coalescing starts at min(64 KiB, bound/4)
    # = 64 KiB, and the slow reader's queue must also hold the large final message.
    chat = await make_chat(send_queue_bytes=4 << 20, max_message_bytes=1 << 20,
                           max_frame_bytes=1 << 20)
    bot, fast_token, slow_token = [await chat.user(n) for n in ("bot", "fast", "slow")]
    await chat.room("general")
    before = set(chat.ctx.connections)
    fast = await chat.ws(fast_token)
    await fast.join("general")
    (fast_session,) = set(chat.ctx.connections) - before
    port = chat.client.server.port
    assert port is not None
    before = set(chat.ctx.connections)
    slow = await _SlowReader.connect(port, slow_token)
    await slow.send({"op": "join", "room": "general", "ref": "j"})
    await asyncio.wait_for(slow.read_until("joined", ref="j"), READ_TIMEOUT)
    # Looked up only now: the server registers a connection just after sending the 101.
    (slow_session,) = set(chat.ctx.connections) - before
    streamer = await chat.ws(bot)

    started = await streamer.request({"op": "stream_start", "room": "general"}, "ack")
    stream = started["stream"]
    # Numbered, so that any loss, duplicate or reordering changes the joined text.
    deltas = [(f"<{i:05d}> " + "lorem ipsum " * 25)[:DELTA_BYTES] for i in range(DELTA_COUNT)]
    reading_slowly = asyncio.create_task(slow.read_until("message", stream=stream))
    reading_fast = asyncio.create_task(_collect_stream(fast, stream))

    seconds = await _stream_at_rate(streamer, stream, deltas)
    end_ack = await streamer.request({"op": "stream_end", "stream": stream}, "ack")
    assert end_ack["op"] == "ack", end_ack
    slow.drain.set()  # the backlog is what is being tested, not the link's speed
    final = await asyncio.wait_for(reading_slowly, READ_TIMEOUT)
    fast_frames = await asyncio.wait_for(reading_fast, READ_TIMEOUT)

    # Near 500 deltas/s: a loaded machine may fall behind the schedule, never run ahead of it,
    # and a much slower stream would no longer be the case under test.
    assert seconds < DELTA_COUNT / DELTAS_PER_SECOND * 3, f"streaming took {seconds:.1f} s"
    whole_text = "".join(deltas)
    outbox = slow_session.outbox
    slow_texts = _assert_whole_stream(slow.frames, stream, deltas)
    assert len(slow_texts) < DELTA_COUNT, "the slow reader's deltas were never coalesced"
    # Every delta the reader did not get on its own was joined by the outbox, none elsewhere.
    assert outbox.coalesced > 0 and outbox.coalesced == DELTA_COUNT - len(slow_texts)
    assert not outbox.evicted and outbox.close_code is None and slow.close_code is None
    assert final["seq"] == end_ack["seq"] and final["text"] == whole_text
    assert "aborted" not in final
    # The fast reader's kernel buffers never fill: its outbox reaches coalescing only when the
    # loop stalls (a GC pause on a loaded machine lets a burst of deltas queue up), and then
    # far less than the slow reader's; whatever it joined, its outbox joined.
    fast_texts = _assert_whole_stream(fast_frames, stream, deltas)
    assert fast_session.outbox.coalesced == DELTA_COUNT - len(fast_texts)
    assert len(fast_texts) > 2 * len(slow_texts)
    assert fast_frames[-1]["seq"] == end_ack["seq"] and fast_frames[-1]["text"] == whole_text
    # The slow reader is still connected and served: a ping gets its pong.
    await slow.send({"op": "ping", "ref": "after"})
    pong = await asyncio.wait_for(slow.read_until("pong", ref="after"), READ_TIMEOUT)
    assert pong["op"] == "pong"
    slow.sock.close()
