"""socket.io (protocol 5) over engine.io v4, on the cheap client's frame loop.

The peer server speaks socket.io, so the same generator must too, at the same cost per frame:
`SioClient` is `WsClient` with another upgrade path and another control-frame dialect. The hot
path is untouched: an engine.io `message` packet carrying a socket.io event is one WebSocket
text frame, `42["message",{..."seq": 5,..."text": "benchts<ns>. ..."}]`, and `WsClient._frames`
finds the timestamp and `"seq":` in it with the same two `find()` calls as in chatserver's
frames. Only the rare packets come here:

    server                              client
    0{"sid":..,"pingInterval":..}  ->   40                 (engine.io open; socket.io connect)
    40{"sid":..}                   ->   (the "hello": connected to namespace "/")
                                        42<id>["join",{"room":..}]
    43<id>[{"room":..,"seq":..}]   ->   (ack of the join: the "joined" reply)
    2                              ->   3                  (engine.io ping/pong)

Requests go out as events with an ack id; the ack comes back as a chatserver-style reply frame
(`joined`, `ack`, `pong`) carrying the original `ref`, so the scenarios need no changes.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from .client import Frame, Recorder, ServerClosed, WsClient

# The reply op a chatserver client would get for each request op.
_REPLY_OP = {"join": "joined", "send": "ack", "ping": "pong"}


class SioClient(WsClient):
    PATH = "/socket.io/?EIO=4&transport=websocket"

    def __init__(self, host: str, port: int, token: str | None, recorder: Recorder) -> None:
        super().__init__(host, port, None, recorder)  # socket.io peers take no bearer token
        self._ack_ids = itertools.count()
        self._pending_acks: dict[int, tuple[str, str]] = {}  # ack id -> (reply op, ref)

    def send_json(self, obj: Frame) -> None:
        """Send a chatserver-style request `{op, ref, ...}` as a socket.io event with an ack."""
        fields = dict(obj)
        op = str(fields.pop("op"))
        ref = str(fields.pop("ref", ""))
        ack_id = next(self._ack_ids)
        self._pending_acks[ack_id] = (_REPLY_OP.get(op, op), ref)
        body = json.dumps([op, fields], separators=(",", ":"))
        self.send_text(f"42{ack_id}{body}".encode())

    def _on_control_text(self, data: bytes, start: int, end: int, now: int) -> None:
        packet = data[start:end]
        kind = packet[:1]
        if kind == b"2":  # engine.io ping: the server closes a client that does not answer
            self.send_text(b"3" + packet[1:])
            self.pings_answered += 1
        elif kind == b"0":  # engine.io open: connect to the default namespace
            self.send_text(b"40")
        elif kind == b"4":
            self._on_socketio(packet[1:], now)
        elif kind == b"1":  # engine.io close
            self.close()

    def _on_socketio(self, packet: bytes, now: int) -> None:
        kind, rest = packet[:1], packet[1:]
        if kind == b"0":  # connected
            if not self.hello.done():
                self.hello.set_result({"op": "hello", **_json_or_empty(rest), "_rx_ns": now})
        elif kind == b"3":  # ack: <id>[payload]
            i = rest.find(b"[")
            reply_op, ref = self._pending_acks.pop(int(rest[:i]), ("ack", ""))
            args = json.loads(rest[i:])
            payload = args[0] if args and isinstance(args[0], dict) else {}
            self._deliver({**payload, "op": reply_op, "ref": ref, "_rx_ns": now})
        elif kind == b"2":  # an event without our timestamp
            name, payload = _event(rest)
            if name == "message":
                self._count(int(payload["seq"]), 0, now)
            else:
                self._deliver({**payload, "op": name, "_rx_ns": now})
        elif kind == b"4":  # connect error
            if not self.hello.done():
                self.hello.set_exception(ServerClosed(f"socket.io refused: {rest!r}"))
        elif kind == b"1":  # disconnected by the server
            self.close()

    def _deliver(self, frame: Frame) -> None:
        self._resolve(frame)
        if self.on_control is not None:
            self.on_control(frame)


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw) if raw else {}
    return value if isinstance(value, dict) else {}


def _event(rest: bytes) -> tuple[str, dict[str, Any]]:
    """Name and first argument of an EVENT packet body (`[name, arg]`, maybe after an ack id)."""
    args = json.loads(rest[rest.find(b"[") :])
    payload = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
    return str(args[0]), payload
