"""The calibration server: the physical-limit reference of `--calibrate` (`--target firehose`).

    python -m benchlib.firehose_server --port 8080

What a fan-out server cannot avoid, and nothing more: per message it parses the `send`, writes
the ack, encodes the `message` frame once (WebSocket header and payload) and writes that one
pre-built frame to every member's transport (`transport.write(frame)`, one call per member).
Raw asyncio Protocols under uvloop; no store, no rendering, no queues, no per-member encoding,
no auth, unbounded buffers. Its frames have chatserver's fields (`html` is the text in <p>),
so the bytes per delivery match.

Two uses. As `--calibrate`, a run next to chatserver in the same invocation: chatserver's
latency and server CPU per delivery divided by this server's say how close chatserver comes to
the cost of a write (issue 5's targets). As `--target firehose` alone, the generator's own
cost: at 1000 clients x 100 msg/s the generator, not this server, is the busier process.

It speaks the benchmark's subset of the protocol: hello, join/joined, send/ack/message,
ping/pong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any, cast

import uvloop

from .wsproto import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    ProtocolError,
    accept_for,
    encode_server_frame,
)

Rooms = dict[str, set["Conn"]]


class Conn(asyncio.Protocol):
    def __init__(self, rooms: Rooms, seqs: dict[str, int]) -> None:
        self.rooms, self.seqs = rooms, seqs
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.decoder: FrameDecoder | None = None
        self.joined: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, hence a cast, not a check
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for room in self.joined:
            self.rooms.get(room, set()).discard(self)

    def data_received(self, data: bytes) -> None:
        if self.decoder is None:
            data = self._http(data)
            if self.decoder is None or not data:
                return
        try:
            for opcode, payload in self.decoder.feed(data):
                self._on_message(opcode, payload)
        except (ProtocolError, ValueError, KeyError):
            assert self.transport is not None
            self.transport.close()

    def _http(self, data: bytes) -> bytes:
        assert self.transport is not None
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        lines = self.head[:end].decode("latin-1").split("\r\n")
        rest = self.head[end + 4 :]
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":")
                                                               for ln in lines[1:])}
        if lines[0].startswith("GET /healthz"):
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close"
                                 b"\r\n\r\nok")
            self.transport.close()
            return b""
        key = headers.get("sec-websocket-key", "")
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n".encode())
        self.decoder = FrameDecoder(expect_masked=True)
        self._send({"op": "hello", "user": "bench", "conn": str(id(self)),
                    "instance": "firehose", "heartbeat": 20})
        return rest

    def _send(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(encode_server_frame(OP_TEXT, json.dumps(frame).encode()))

    def _on_message(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == OP_PING:
            self.transport.write(encode_server_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.transport.write(encode_server_frame(OP_CLOSE, payload[:2]))
            self.transport.close()
        elif opcode == OP_TEXT:
            self._on_frame(json.loads(payload))

    def _on_frame(self, frame: dict[str, Any]) -> None:
        op, ref = frame.get("op"), frame.get("ref")
        if op == "join":
            room = str(frame["room"])
            self.rooms.setdefault(room, set()).add(self)
            self.joined.add(room)
            self._send({"op": "joined", "ref": ref, "room": room, "seq": self.seqs.get(room, 0)})
        elif op == "send":
            self._broadcast(str(frame["room"]), str(frame["text"]), ref)
        elif op == "ping":
            self._send({"op": "pong", "ref": ref, "ts": ""})
        else:
            self._send({"op": "error", "ref": ref, "code": "unknown_op", "message": "?"})

    def _broadcast(self, room: str, text: str, ref: Any) -> None:
        seq = self.seqs[room] = self.seqs.get(room, 0) + 1
        self._send({"op": "ack", "ref": ref, "room": room, "seq": seq, "id": str(seq), "ts": ""})
        msg = {"op": "message", "room": room, "seq": seq, "id": str(seq), "user": "bench",
               "text": text, "html": f"<p>{text}</p>", "ts": ""}
        frame = encode_server_frame(OP_TEXT, json.dumps(msg).encode())  # encoded once
        for member in self.rooms.get(room, ()):
            if member.transport is not None:
                member.transport.write(frame)


async def serve(host: str, port: int) -> None:
    rooms: Rooms = {}
    seqs: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(rooms, seqs), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
