"""The `websockets` library's peer for `scripts/bench --peer websockets`: `broadcast()` fan-out.

    python -m benchlib.websockets_server --port 8080

A server on the `websockets` library's asyncio implementation (`websockets.asyncio.server`),
under uvloop, written the way the library's documentation recommends for fan-out: the room is
a set of connections and a message goes to all of them with `websockets.broadcast()`, which
encodes the message once and writes it to every connection without waiting for any of them
(docs/topics/broadcast.rst). In-process only: no store and no broker, like the socketio peer
with its in-process manager, so it does strictly less work per message than chatserver.

It speaks chatserver's protocol for the benchmark's fan-out subset, so the generator's
chatserver dialect measures it unchanged:

- on connect: `hello {user, conn, instance, heartbeat}` (any bearer token is accepted);
- `join {room, ref}`: add the connection to the room, answer `joined {ref, room, seq}` with
  the room's latest seq;
- `send {room, text, ref}`: the next seq from an in-process counter, `ack {ref, room, seq, id,
  ts}` to the sender, then `broadcast()` of the `message` frame (chatserver's fields; `html`
  is the text in <p>, no Markdown) to the room, the sender included as in chatserver;
- `ping {ref}`: `pong {ref, ts}`; anything else: `error {ref, code: "unknown_op"}`.

Compression is off (chatserver's default; the generator offers no extension either).
`GET /healthz` answers 200 for the harness.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from http import HTTPStatus
from typing import Any

import uvloop
from websockets import broadcast
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

INSTANCE = f"websockets-{os.getpid()}"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


class Chat:
    """Rooms of connections and their seq counters; one per server process."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[ServerConnection]] = {}
        self.seqs: dict[str, int] = {}
        self.conns = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.conns += 1
        await ws.send(dumps({"op": "hello", "user": "bench", "conn": str(self.conns),
                             "instance": INSTANCE, "heartbeat": 20}))
        joined: set[str] = set()
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                    op, ref = frame.get("op"), frame.get("ref")
                    if op == "send":
                        await self.send(ws, str(frame["room"]), str(frame["text"]), ref)
                        continue
                    reply = self.reply(ws, joined, op, ref, frame)
                except (ValueError, KeyError, TypeError, AttributeError):
                    reply = {"op": "error", "code": "bad_request", "message": "bad frame"}
                await ws.send(dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            for room in joined:
                self.rooms.get(room, set()).discard(ws)

    def reply(self, ws: ServerConnection, joined: set[str], op: Any, ref: Any,
              frame: dict[str, Any]) -> dict[str, Any]:
        """The answer to a request other than `send`."""
        if op == "join":
            room = str(frame["room"])
            self.rooms.setdefault(room, set()).add(ws)
            joined.add(room)
            return {"op": "joined", "ref": ref, "room": room, "seq": self.seqs.get(room, 0)}
        if op == "ping":
            return {"op": "pong", "ref": ref, "ts": now_iso()}
        return {"op": "error", "ref": ref, "code": "unknown_op", "message": "unknown op"}

    async def send(self, ws: ServerConnection, room: str, text: str, ref: Any) -> None:
        """Ack to the sender, then the message to the whole room with one `broadcast()`."""
        seq = self.seqs[room] = self.seqs.get(room, 0) + 1
        msg = {"op": "message", "room": room, "seq": seq, "id": f"{seq:x}", "user": "bench",
               "text": text, "html": f"<p>{text}</p>", "ts": now_iso()}
        await ws.send(dumps({"op": "ack", "ref": ref, "room": room, "seq": seq,
                             "id": msg["id"], "ts": msg["ts"]}))
        broadcast(self.rooms.get(room, ()), dumps(msg))


def healthz(connection: ServerConnection, request: Request) -> Response | None:
    """`GET /healthz` is answered with 200 instead of a handshake; every other path upgrades."""
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def serve_forever(host: str, port: int) -> None:
    chat = Chat()
    async with serve(chat.handler, host, port, process_request=healthz, compression=None,
                     backlog=1024) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
