"""File routes (docs/protocol.md §10, "Files"): upload, download, thumbnail.

`POST /api/rooms/{room}/files` checks everything it can before reading a byte of the body:
credentials, that the user may read (so post to) the room, the send rate limit. Downloads
answer 404 for anyone who may not read the file's room (chatserver.files).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from chatserver import auth, files, protocol, uploads
from chatserver.app_keys import CONTEXT
from chatserver.handlers import check_send_rate


async def upload(request: web.Request) -> web.StreamResponse:
    """201 with the posted message (the `message` frame's body, `file` included)."""
    ctx = request.app[CONTEXT]
    info = await auth.authenticate(ctx, request)
    room = await ctx.rooms.readable(request.match_info["room"], info.user)
    check_send_rate(ctx, info.user.name)
    stored = await uploads.receive(ctx, request, room, info.user)
    return web.Response(body=orjson.dumps(protocol.message_body(stored)), status=201,
                        content_type="application/json")


async def download(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    info = await auth.authenticate(ctx, request)
    return await files.serve(ctx, request.match_info["id"], info.user, thumbnail=False)


async def thumbnail(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    info = await auth.authenticate(ctx, request)
    return await files.serve(ctx, request.match_info["id"], info.user, thumbnail=True)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/rooms/{room}/files", upload)
    app.router.add_get("/api/files/{id}", download)
    app.router.add_get("/api/files/{id}/thumbnail", thumbnail)
