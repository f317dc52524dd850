"""The python-socketio peer for `scripts/bench --peer socketio`: what Open WebUI and Chainlit run.

    python -m benchlib.socketio_server --port 8080 [--redis redis://127.0.0.1:6379/0]

A `socketio.AsyncServer` attached to aiohttp, under uvloop, with `AsyncRedisManager` when
`--redis` is given (the in-process `AsyncManager` otherwise), written the way their code and the
python-socketio docs do it. Events, in the benchmark's subset of the chat protocol:

- `join {room}`: `enter_room`, then the ack `{room, seq, instance}` (seq: the room's latest);
- `send {room, text}`: next seq from an in-process counter, `emit("message", {...}, room=room)`
  through the manager, then the ack `{room, seq, id, ts}`;
- `ping`: the ack `{ts}`.

No store at all: the peer keeps nothing, so it does strictly less work per message than
chatserver, which commits every message to its store before the ack. That makes the comparison
conservative for chatserver. The `message` payload has chatserver's fields, with `html` made by
wrapping the text in <p> (no Markdown rendering), so frames are about the same size.

With AsyncRedisManager, python-socketio (5.x) delivers to this process's own members directly
and publishes the emit to Redis for other processes; a single process therefore pays the Redis
publish but not a round trip, like chatserver with its Redis broker.
"""

from __future__ import annotations

import argparse
import datetime
import os
from typing import Any

import socketio  # type: ignore[import-untyped]
import uvloop
from aiohttp import web

INSTANCE = f"socketio-{os.getpid()}"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def make_server(redis_url: str | None) -> socketio.AsyncServer:
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, logger=False,
                               engineio_logger=False)
    seqs: dict[str, int] = {}

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room = str(data["room"])
        await sio.enter_room(sid, room)
        return {"room": room, "seq": seqs.get(room, 0), "instance": INSTANCE}

    @sio.on("send")  # type: ignore[untyped-decorator]
    async def send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room, text = str(data["room"]), str(data["text"])
        # Taken before the first await: seqs follow the order the handlers started in.
        seq = seqs[room] = seqs.get(room, 0) + 1
        msg = {"room": room, "seq": seq, "id": f"{seq:x}", "user": "bench", "text": text,
               "html": f"<p>{text}</p>", "ts": now_iso()}
        await sio.emit("message", msg, room=room)
        return {"room": room, "seq": seq, "id": msg["id"], "ts": msg["ts"]}

    @sio.on("ping")  # type: ignore[untyped-decorator]
    async def ping(sid: str, data: Any = None) -> dict[str, Any]:
        return {"ts": now_iso()}

    return sio


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(redis_url: str | None) -> web.Application:
    app = web.Application()
    make_server(redis_url).attach(app)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", help="AsyncRedisManager URL; in-process manager without it")
    args = parser.parse_args()
    uvloop.install()
    web.run_app(make_app(args.redis), host=args.host, port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
