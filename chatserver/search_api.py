"""`GET /api/search?q=&room=&before=&limit=` (docs/protocol.md §10, "Search").

Parses and checks the request, then asks the store for one page: the store applies the
permission rule (public rooms and the user's rooms) inside its query. A `room` the user may not
read answers exactly as history does (`rooms.readable`: 404 `not_found`, 403 `forbidden`).
`before` takes the `next` cursor of the previous page.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from chatserver import auth
from chatserver.app_keys import CONTEXT
from chatserver.errors import BadRequest
from chatserver.search import SearchHit, decode_cursor, encode_cursor, parse_query

DEFAULT_LIMIT = 20
MAX_LIMIT = 50


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("query parameter 'limit' must be an integer") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"query parameter 'limit' must be from 1 to {MAX_LIMIT}")
    return value


def hit_body(hit: SearchHit) -> dict[str, object]:
    return {"room": hit.room, "seq": hit.seq, "thread": hit.thread, "user": hit.user,
            "ts": hit.ts, "snippet": hit.snippet}


async def get_search(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    info = await auth.authenticate(ctx, request)
    raw = request.query.get("q", "")
    if not raw.strip():
        raise BadRequest("query parameter 'q' is required")
    query = parse_query(raw)
    limit = _limit(request)
    before = request.query.get("before", "")
    after = decode_cursor(before) if before else None
    room_name = request.query.get("room", "")
    room_id = (await ctx.rooms.readable(room_name, info.user)).id if room_name else None
    page = await ctx.store.search_messages(
        info.user.id, query, room_id=room_id, after=after, limit=limit)
    body = {"results": [hit_body(hit) for hit in page.hits],
            "next": encode_cursor(page.next) if page.next is not None else None}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/search", get_search)


__all__ = ["add_routes", "get_search", "hit_body"]
