"""A WebSocket client on a raw asyncio Protocol, cheap enough to run thousands in one process.

Why not a WebSocket library: at 1000 clients x 100 msg/s the generator must take 100,000 frames/s
on one core, i.e. ~10 us per frame including the syscall. A library that builds a message object,
decodes UTF-8 and parses JSON per frame costs several times that. So the hot path here reads the
frame header, and for `message` frames pulls only `seq` and the publisher's timestamp out of the
bytes with `find()`. Full JSON parsing is kept for the rare control frames (hello, joined, ack,
pong, error).
"""

from __future__ import annotations

import asyncio
import json
import socket
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic_ns
from typing import Any, cast

from . import wsproto

# The publisher writes "benchts<monotonic_ns>." at the start of every text. Letters, digits and a
# dot survive JSON encoding and Markdown rendering unchanged, so the first hit is the timestamp.
MARK = b"benchts"
_MARK_LEN = len(MARK)
_SEQ = b'"seq":'
_OP = b'"op":'
_NEVER = 1 << 62

Frame = dict[str, Any]


class Recorder:
    """Shared sink for latency samples of every client in the process.

    Only messages whose embedded send time falls in [start_ns, end_ns) are sampled, which is how
    the warm-up is excluded without any per-client coordination.
    """

    def __init__(self, per_message: bool = False) -> None:
        self.start_ns = _NEVER
        self.end_ns = _NEVER
        self.latencies_ns = array("q")
        self.in_window = 0
        self.last_rx_ns = 0
        # send time -> [first, last] receive time over all members: how long one message's
        # fan-out took (crossinstance compares instances with it). Off by default: a dict
        # update per frame is not free.
        self.copies: dict[int, list[int]] | None = {} if per_message else None

    def open_window(self, start_ns: int, end_ns: int) -> None:
        self.start_ns, self.end_ns = start_ns, end_ns


# The publisher's own copies of its messages must not count: a recorder whose window is empty.
NULL_RECORDER = Recorder()
NULL_RECORDER.start_ns = NULL_RECORDER.end_ns = 0


class ServerClosed(ConnectionError):
    """The connection ended (closed by the server, reset, or failed handshake).

    A refused upgrade carries the HTTP status and headers (503 has Retry-After)."""

    def __init__(self, message: str, http_status: int | None = None,
                 http_headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.http_headers = http_headers or {}


def _seen(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class WsClient(asyncio.Protocol):
    """One WebSocket connection. Counts `message` frames by seq; exposes control frames.

    Per-connection delivery accounting: `bitmap[seq - seq_base]` marks every seq received, so
    duplicates are exact and losses can be computed against the publisher's acked seqs later.
    """

    PATH = "/ws"  # the upgrade request's target; the socket.io client overrides it

    def __init__(self, host: str, port: int, token: str | None, recorder: Recorder) -> None:
        self._host, self._port, self._token = host, port, token
        self._key = wsproto.make_key()
        self.rec = recorder
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.hello: asyncio.Future[Frame] = loop.create_future()
        # A refused upgrade fails `upgraded` first and nobody waits for `hello` after that:
        # mark its exception as seen, or asyncio logs "Future exception was never retrieved".
        self.hello.add_done_callback(_seen)
        self.is_upgraded = False  # a plain bool: cheaper than upgraded.done() on every read
        self.closed = False
        self.close_code: int | None = None
        self.on_control: Callable[[Frame], None] | None = None
        self._replies: list[tuple[str, str, asyncio.Future[Frame]]] = []
        self._head = b""
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._need = 0
        self._frag: list[bytes] = []
        # delivery accounting
        self.seq_base = 0
        self.bitmap = bytearray(4096)
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.stale = 0
        self.last_seq = 0
        self.pings_answered = 0
        self.instance = ""  # the server instance (process) that holds this connection
        # the upgrade's HTTP answer: 101, or why not (503 with Retry-After when refused)
        self.http_status: int | None = None
        self.http_headers: dict[str, str] = {}

    # ---- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, hence a cast, not a check
        self.transport = cast(asyncio.Transport, transport)
        req = wsproto.build_upgrade_request(self._host, self._port, self.PATH, self._key,
                                            self._token)
        self.transport.write(req)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        err = ServerClosed(f"connection lost: {exc!r} close_code={self.close_code}")
        futs: list[asyncio.Future[Any]] = [self.upgraded, self.hello]
        for fut in futs:
            if not fut.done():
                fut.set_exception(err)
        for _, _, fut in self._replies:
            if not fut.done():
                fut.set_exception(err)
        self._replies.clear()

    def data_received(self, data: bytes) -> None:
        now = monotonic_ns()  # one clock read per read(): every frame in it arrived together
        if not self.is_upgraded:
            data = self._handshake(data)
            if not data:
                return
        if self._pending:
            self._pending.append(data)
            self._pending_len += len(data)
            if self._pending_len < self._need:
                return  # keep collecting a big frame without re-joining on every read
            data = b"".join(self._pending)
            self._pending, self._pending_len = [], 0
        self._frames(data, now)

    # ---- handshake ----------------------------------------------------------------------

    def _handshake(self, data: bytes) -> bytes:
        self._head += data
        try:
            resp = wsproto.parse_upgrade_response(self._head)
            if resp is None:
                return b""
            self.http_status, self.http_headers = resp.status, resp.headers
            wsproto.check_upgrade(resp, self._key)
        except wsproto.HandshakeError as exc:
            self.upgraded.set_exception(ServerClosed(str(exc), self.http_status,
                                                     self.http_headers))
            self.upgraded.exception()  # mark retrieved; the caller may already have given up
            assert self.transport is not None
            self.transport.close()
            return b""
        self._head = b""
        self.is_upgraded = True
        self.upgraded.set_result(None)
        return resp.rest

    # ---- frame loop (hot path) ----------------------------------------------------------

    def _frames(self, data: bytes, now: int) -> None:
        n, pos = len(data), 0
        find, count = data.find, self._count  # locals: this loop runs 100,000 times a second
        while n - pos >= 2:
            b1 = data[pos + 1]
            if b1 & 0x80:
                self._fail(1002, "server frames must not be masked")
                return
            ln = b1 & 0x7F
            if ln < 126:
                start = pos + 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln, start = (data[pos + 2] << 8) | data[pos + 3], pos + 4
            else:
                if n - pos < 10:
                    break
                ln, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
            end = start + ln
            if end > n:
                self._keep(data, pos, end - pos)
                return
            if data[pos] == 0x81:  # FIN + text: nearly every frame, so its fast path is inline
                m = find(MARK, start, end)
                q = find(_SEQ, start, end) if m >= 0 else -1
                if q >= 0:
                    c = find(b",", q, end)
                    seq = int(data[q + 6 : c if c >= 0 else find(b"}", q, end)])
                    count(seq, int(data[m + _MARK_LEN : find(b".", m, end)]), now)
                else:
                    self._on_text(data, start, end, now)
            else:
                self._on_other(data[pos], data, start, end, now)
            pos = end
        if pos < n:
            self._keep(data, pos, n - pos + 1)  # header split across reads: any byte helps

    def _keep(self, data: bytes, pos: int, need: int) -> None:
        rest = data[pos:]
        self._pending, self._pending_len, self._need = [rest], len(rest), need

    def _on_text(self, data: bytes, start: int, end: int, now: int) -> None:
        """A whole text message off the fast path: reassembled fragments, or a control frame."""
        m = data.find(MARK, start, end)
        if m >= 0:
            q = data.find(_SEQ, start, end)
            if q >= 0:
                dot = data.find(b".", m, end)
                sent = int(data[m + _MARK_LEN : dot])
                self._count(self._seq_at(data, q + 6, end), sent, now)
                return
        self._on_control_text(data, start, end, now)

    @staticmethod
    def _seq_at(data: bytes, i: int, end: int) -> int:
        c = data.find(b",", i, end)
        if c < 0:
            c = data.find(b"}", i, end)
        return int(data[i:c])  # int() skips the space json.dumps puts after ':'

    def _count(self, seq: int, sent: int, now: int) -> None:
        idx = seq - self.seq_base
        if idx <= 0:
            self.stale += 1  # from before our join: not part of what we measure
            return
        bm = self.bitmap
        if idx >= len(bm):
            bm.extend(bytes(idx - len(bm) + 4096))
        if bm[idx]:
            self.duplicates += 1
            return
        bm[idx] = 1
        self.received += 1
        if seq < self.last_seq:
            self.out_of_order += 1
        else:
            self.last_seq = seq
        rec = self.rec
        if rec.start_ns <= sent < rec.end_ns:
            rec.latencies_ns.append(now - sent)
            rec.in_window += 1
            rec.last_rx_ns = now
            copies = rec.copies
            if copies is not None:
                span = copies.get(sent)
                if span is None:
                    copies[sent] = [now, now]
                else:
                    span[1] = now  # receive times only grow: one process, one clock

    # ---- rare frames --------------------------------------------------------------------

    def _on_other(self, b0: int, data: bytes, start: int, end: int, now: int) -> None:
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode == wsproto.OP_PING:
            self._write(wsproto.OP_PONG, data[start:end])
            self.pings_answered += 1
        elif opcode == wsproto.OP_CLOSE:
            if end - start >= 2:
                self.close_code = int.from_bytes(data[start : start + 2], "big")
            if not self.closed:
                self._write(wsproto.OP_CLOSE, data[start : start + 2])
                assert self.transport is not None
                self.transport.close()
        elif opcode in (wsproto.OP_TEXT, wsproto.OP_CONT):
            self._frag.append(data[start:end])  # a fragmented text message: rare, so join
            if fin:
                whole = b"".join(self._frag)
                self._frag = []
                self._on_text(whole, 0, len(whole), now)
        # binary frames and unsolicited pongs carry nothing we measure

    def _on_control_text(self, data: bytes, start: int, end: int, now: int) -> None:
        if self._is_message(data, start, end):
            # a message without our timestamp (e.g. Markdown in the ping scenario): count it
            q = data.find(_SEQ, start, end)
            if q >= 0:
                self._count(self._seq_at(data, q + 6, end), 0, now)
            return
        frame: Frame = json.loads(data[start:end])
        frame["_rx_ns"] = now
        if frame.get("op") == "hello" and not self.hello.done():
            self.instance = str(frame.get("instance", ""))
            self.hello.set_result(frame)
        self._resolve(frame)
        if self.on_control is not None:
            self.on_control(frame)

    @staticmethod
    def _is_message(data: bytes, start: int, end: int) -> bool:
        # '"op":' can only be the real key: inside a JSON string every quote is escaped
        i = data.find(_OP, start, end)
        if i < 0:
            return False
        i += 5
        while i < end and data[i] == 0x20:
            i += 1
        return data.startswith(b'"message"', i)

    # ---- sending and waiting ------------------------------------------------------------

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wsproto.encode_client_frame(opcode, payload))

    def _fail(self, code: int, reason: str) -> None:
        self._write(wsproto.OP_CLOSE, wsproto.close_payload(code, reason))
        if self.transport is not None:
            self.transport.close()

    def send_json(self, obj: Frame) -> None:
        self.send_text(json.dumps(obj, separators=(",", ":")).encode("utf-8"))

    def send_text(self, payload: bytes) -> None:
        self._write(wsproto.OP_TEXT, payload)

    def expect(self, op: str, ref: str) -> asyncio.Future[Frame]:
        """A future for the reply to the frame we are about to send with `ref`.

        It resolves with the first control frame echoing `ref` (the reply, or an `error`), or
        failing that the first frame of type `op`, in case a server forgets to echo refs.
        """
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._replies.append((op, ref, fut))
        return fut

    def _resolve(self, frame: Frame) -> None:
        ref, op = frame.get("ref"), frame.get("op")
        for i, (want_op, want_ref, fut) in enumerate(self._replies):
            if ref == want_ref or (ref is None and op == want_op):
                del self._replies[i]
                if not fut.done():
                    fut.set_result(frame)
                return

    async def join(self, room: str, timeout: float, after: int | None = None) -> Frame:
        """Join `room`; with `after`, resume: the missed messages (seq > after) arrive before
        `joined` and are counted like live ones."""
        fut = self.expect("joined", f"join-{room}")
        join: Frame = {"op": "join", "room": room, "ref": f"join-{room}"}
        if after is not None:
            join["after"] = after
            self.seq_base = self.last_seq = after  # before the replay can arrive
        self.send_json(join)
        frame = await asyncio.wait_for(fut, timeout)
        if frame.get("op") != "joined":
            raise RuntimeError(f"join {room!r} failed: {frame}")
        if after is None:
            self.seq_base = int(frame["seq"])
            self.last_seq = self.seq_base
        self.instance = self.instance or str(frame.get("instance", ""))
        return frame

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write(wsproto.OP_CLOSE, wsproto.close_payload(1000))
            self.transport.close()


async def connect(
    host: str, port: int, token: str | None, recorder: Recorder, timeout: float,
    cls: type[WsClient] = WsClient, rcvbuf: int | None = None,
) -> WsClient:
    """Open a connection, complete the upgrade and wait for the server's `hello`.

    `cls` picks the dialect: `WsClient` speaks chatserver's protocol, `sioclient.SioClient`
    socket.io over the same frame loop (or a subclass that reads differently). `rcvbuf` sets
    SO_RCVBUF before connecting, when the TCP window is negotiated: a slow reader's window.
    """
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        _open(loop, lambda: cls(host, port, token, recorder), host, port, rcvbuf), timeout)
    assert isinstance(proto, WsClient)
    try:
        await asyncio.wait_for(proto.upgraded, timeout)
        await asyncio.wait_for(asyncio.shield(proto.hello), timeout)
    except BaseException:
        proto.close()
        raise
    return proto


def retry_after(exc: BaseException) -> float | None:
    """The Retry-After of a refused upgrade, in seconds; None when there is none."""
    if isinstance(exc, ServerClosed):
        try:
            return float(exc.http_headers.get("retry-after", ""))
        except ValueError:
            return None
    return None


@dataclass
class Refusals:
    """Upgrades the server refused with 503 that were tried again: a run that connected only
    after its overload guard said "later" (a stall at start-up on a busy machine) says so."""

    count: int = 0


async def connect_admitted(
    host: str, port: int, token: str | None, recorder: Recorder, timeout: float,
    cls: type[WsClient] = WsClient, rcvbuf: int | None = None,
    refusals: Refusals | None = None,
) -> WsClient:
    """`connect`, trying again after the Retry-After of a 503, as clients are told to, until
    `timeout` has passed. Anything else that fails is raised at once."""
    give_up_ns = monotonic_ns() + int(timeout * 1e9)
    while True:
        try:
            return await connect(host, port, token, recorder, timeout, cls, rcvbuf)
        except ServerClosed as exc:
            wait = retry_after(exc) if exc.http_status == 503 else None
            if wait is None or monotonic_ns() + int(wait * 1e9) >= give_up_ns:
                raise
            if refusals is not None:
                refusals.count += 1
            await asyncio.sleep(wait)


async def _open(loop: asyncio.AbstractEventLoop, factory: Callable[[], WsClient], host: str,
                port: int, rcvbuf: int | None) -> tuple[asyncio.BaseTransport, WsClient]:
    if rcvbuf is None:
        return await loop.create_connection(factory, host, port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await loop.create_connection(factory, sock=sock)
