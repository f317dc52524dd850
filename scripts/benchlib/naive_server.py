"""The "what people write first" chat server, as the baseline for `scripts/bench --baseline`.

    python -m benchlib.naive_server --port 8080 --db /tmp/naive.db [--user pinger:secret-pass]

Deliberately naive, and deliberately the same shape as countless tutorials:
- one synchronous sqlite3 INSERT + commit per message, inline in the WebSocket handler;
- Markdown rendered and sanitised inline on the event loop;
- fan-out by awaiting `send_str(json.dumps(...))` to each member in turn, re-encoding per member;
- `/api/login` verifies argon2 inline on the event loop.
It accepts any bearer token (authentication is not what is being compared) and speaks only the
protocol subset the benchmark uses: hello, join/joined, send/ack/message, ping/pong, error.
It runs under uvloop like chatserver, so the comparison is about design, not the event loop.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import secrets
import sqlite3
from typing import Any

import nh3
import uvloop
from aiohttp import WSMsgType, web
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from markdown_it import MarkdownIt

DB = web.AppKey("db", sqlite3.Connection)
ROOMS = web.AppKey("rooms", dict)  # room name -> set of WebSocketResponse
HASHER = PasswordHasher()
MD = MarkdownIt()
_conn_ids = itertools.count(1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, user TEXT NOT NULL,
    text TEXT NOT NULL, html TEXT NOT NULL, ts TEXT NOT NULL, PRIMARY KEY (room, seq));
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, hash TEXT NOT NULL);
"""


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def latest_seq(db: sqlite3.Connection, room: str) -> int:
    sql = "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room = ?"
    row = db.execute(sql, (room,)).fetchone()
    return int(row[0])


def store_message(db: sqlite3.Connection, room: str, user: str, text: str) -> dict[str, Any]:
    html = nh3.clean(MD.render(text))
    seq = latest_seq(db, room) + 1
    msg = {"op": "message", "room": room, "seq": seq, "id": secrets.token_hex(8),
           "user": user, "text": text, "html": html, "ts": now_iso()}
    db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
               (room, seq, msg["id"], user, text, html, msg["ts"]))
    db.commit()
    return msg


async def handle_frame(app: web.Application, ws: web.WebSocketResponse, joined: set[str],
                       frame: dict[str, Any]) -> None:
    op, ref = frame.get("op"), frame.get("ref")
    if op == "join":
        room = str(frame["room"])
        app[ROOMS].setdefault(room, set()).add(ws)
        joined.add(room)
        await ws.send_str(json.dumps({"op": "joined", "ref": ref, "room": room,
                                      "seq": latest_seq(app[DB], room)}))
    elif op == "send":
        room = str(frame["room"])
        msg = store_message(app[DB], room, "bench", str(frame["text"]))
        await ws.send_str(json.dumps({"op": "ack", "ref": ref, "room": room, "seq": msg["seq"],
                                      "id": msg["id"], "ts": msg["ts"]}))
        for member in list(app[ROOMS].get(room, ())):
            await member.send_str(json.dumps(msg))
    elif op == "ping":
        await ws.send_str(json.dumps({"op": "pong", "ref": ref, "ts": now_iso()}))
    else:
        await ws.send_str(json.dumps({"op": "error", "ref": ref, "code": "unknown_op",
                                      "message": "unknown op"}))


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    await ws.send_str(json.dumps({"op": "hello", "user": "bench", "conn": str(next(_conn_ids)),
                                  "instance": "naive", "heartbeat": 20}))
    joined: set[str] = set()
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
                await handle_frame(request.app, ws, joined, frame)
            except (ValueError, KeyError, TypeError):
                await ws.send_str(json.dumps({"op": "error", "code": "bad_request",
                                              "message": "bad frame"}))
    finally:
        for room in joined:
            request.app[ROOMS].get(room, set()).discard(ws)
    return ws


async def login(request: web.Request) -> web.Response:
    body = await request.json()
    row = request.app[DB].execute("SELECT hash FROM users WHERE name = ?",
                                  (str(body.get("username")),)).fetchone()
    try:
        if row is None:
            raise VerificationError("no such user")
        HASHER.verify(row[0], str(body.get("password")))  # inline, on the loop: the naive way
    except VerificationError:
        return web.json_response({"error": "unauthorized", "message": "bad credentials"},
                                 status=401)
    token = secrets.token_urlsafe(32)
    resp = web.json_response({"token": token, "user": {"name": body["username"]}})
    resp.set_cookie("chat_session", token, httponly=True, samesite="Strict")
    return resp


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(db_path: str, users: list[str]) -> web.Application:
    db = sqlite3.connect(db_path)
    db.executescript(SCHEMA)
    for spec in users:
        name, _, password = spec.partition(":")
        db.execute("INSERT OR REPLACE INTO users VALUES (?, ?)", (name, HASHER.hash(password)))
    db.commit()
    app = web.Application()
    app[DB] = db
    app[ROOMS] = {}
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/api/login", login)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD to create")
    args = parser.parse_args()
    uvloop.install()
    web.run_app(make_app(args.db, args.user), host=args.host, port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
