"""Sans-I/O WebSocket pieces (RFC 6455) for the benchmark: handshake, frame encoding, decoding.

Nothing here touches a socket. The client's per-frame hot loop lives in `client.py` and is
specialised for speed; `FrameDecoder` here is the general, obviously-correct decoder used by the
calibration server (which must unmask client frames) and by tests as the reference.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def make_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept value a server must answer `key` with."""
    digest = hashlib.sha1(key.encode("ascii") + GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def build_upgrade_request(host: str, port: int, path: str, key: str, token: str | None) -> bytes:
    """The HTTP/1.1 GET that asks for a WebSocket; no extensions, so no compression."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass
class UpgradeResponse:
    status: int
    headers: dict[str, str]
    rest: bytes  # bytes after the header block: the first frames may share the read


class HandshakeError(Exception):
    """The server did not accept the upgrade as RFC 6455 requires."""


def parse_upgrade_response(buf: bytes) -> UpgradeResponse | None:
    """Parse the response head from `buf`; None while the blank line has not arrived yet."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HandshakeError(f"bad status line {head[0]!r}")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return UpgradeResponse(int(parts[1]), headers, buf[end + 4 :])


def check_upgrade(resp: UpgradeResponse, key: str) -> None:
    """Raise HandshakeError unless `resp` is a valid 101 for `key`."""
    if resp.status != 101:
        raise HandshakeError(f"HTTP {resp.status} instead of 101")
    if resp.headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("missing Upgrade: websocket")
    if resp.headers.get("sec-websocket-accept") != accept_for(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")


def apply_mask(payload: bytes, key: bytes) -> bytes:
    """XOR `payload` with the repeating 4-byte `key`, one big-int operation instead of a loop."""
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


def _header(opcode: int, length: int, masked: bool) -> bytes:
    first = 0x80 | opcode  # always FIN: we never fragment what we send
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length)
    if length < 65536:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


def encode_client_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: RFC 6455 requires every client frame to be masked with a random key."""
    key = os.urandom(4)
    return _header(opcode, len(payload), True) + key + apply_mask(payload, key)


def encode_server_frame(opcode: int, payload: bytes) -> bytes:
    """A server frame: never masked."""
    return _header(opcode, len(payload), False) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")


class ProtocolError(Exception):
    """The peer broke RFC 6455 framing."""


@dataclass
class FrameDecoder:
    """Incremental decoder: feed bytes, get whole messages (continuations reassembled).

    Yields (opcode, payload) with opcode of the first fragment for data messages; control
    frames come out as soon as they are complete, even between fragments, as the RFC allows.
    """

    expect_masked: bool
    _buf: bytearray = field(default_factory=bytearray)
    _frag_op: int = -1
    _frag: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                out.append(message)

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        length, pos = b1 & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = struct.unpack_from("!H", buf, 2)[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = struct.unpack_from("!Q", buf, 2)[0], 10
        masked = bool(b1 & 0x80)
        if masked != self.expect_masked:
            raise ProtocolError("mask bit does not match the peer's role")
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key, pos = bytes(buf[pos : pos + 4]), pos + 4
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        if masked:
            payload = apply_mask(payload, key)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode >= 0x8:
            return opcode, payload
        if opcode != OP_CONT:
            if self._frag_op >= 0:
                raise ProtocolError("new data frame inside a fragmented message")
            if fin:
                return opcode, payload
            self._frag_op, self._frag = opcode, [payload]
            return None
        if self._frag_op < 0:
            raise ProtocolError("continuation without a start")
        self._frag.append(payload)
        if not fin:
            return None
        message = (self._frag_op, b"".join(self._frag))
        self._frag_op, self._frag = -1, []
        return message
