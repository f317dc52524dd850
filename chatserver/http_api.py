"""HTTP routes (PROTOCOL section 7): login, rooms, history, presence, posting, incoming
webhooks, health and readiness.

Errors are JSON `{"error": "<code>", "message": "..."}` with the matching status, produced by
one middleware from the same `ChatError` classes the WebSocket path uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from chatserver import (
    auth,
    files_api,
    hooks,
    protocol,
    reads,
    room_announce,
    search_api,
    threads,
    tokens,
)
from chatserver.app_keys import CONTEXT
from chatserver.context import ChatContext
from chatserver.errors import (
    BadRequest,
    ChatError,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
)
from chatserver.handlers import check_send_rate, read_history
from chatserver.store.base import RoomListing, TokenInfo, User

log = logging.getLogger(__name__)

# A room's presence snapshot looks at its first this-many members by name. Why a cap: a room of
# 100,000 members would otherwise cost 100,000 broker lookups (200 Redis script calls) and a
# response of megabytes on every room open, and a crowd reconnecting opens rooms all at once.
PRESENCE_MAX_MEMBERS = 1_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def error_response(error: ChatError) -> web.Response:
    headers = None
    if isinstance(error, RateLimited | Unavailable):
        headers = {"Retry-After": str(max(1, round(error.retry_after + 0.5)))}
    body = {"error": error.code, "message": error.message, **error.extra}
    return json_response(body, error.http_status, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ChatError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        code = {404: "not_found", 405: "bad_request", 413: "too_large"}.get(exc.status,
                                                                          "bad_request")
        return json_response({"error": code, "message": exc.reason}, exc.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, loggable_path(request))
        return json_response({"error": "internal", "message": "internal error; logged"}, 500)


def loggable_path(request: web.BaseRequest) -> str:
    """The path, but a webhook's: its token is the credential and must never be logged."""
    path = request.path
    return "/hooks/{token}" if path.startswith("/hooks/") else path


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"body needs a non-empty string field {key!r}")
    return value


def _ctx(request: web.Request) -> ChatContext:
    return request.app[CONTEXT]


async def _who(request: web.Request) -> TokenInfo:
    return await auth.authenticate(_ctx(request), request)


def user_body(user: User) -> dict[str, Any]:
    return {"name": user.name, "admin": user.is_admin, "bot": user.is_bot}


async def login(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    body = await _body(request)
    username, password = _string(body, "username").strip().lower(), _string(body, "password")
    address = request.remote or "unknown"
    token, user = await auth.login(ctx, username, password, address,
                                   asyncio.get_running_loop().time())
    response = json_response({"token": token, "user": user_body(user)})
    response.set_cookie(auth.COOKIE_NAME, token, httponly=True, samesite="Strict",
                        secure=request.secure, path="/")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    info = await _who(request)
    closed = await auth.logout(_ctx(request), info)
    response = json_response({"ok": True, "closed_connections": closed})
    response.del_cookie(auth.COOKIE_NAME, path="/")
    return response


async def me(request: web.Request) -> web.StreamResponse:
    return json_response(user_body((await _who(request)).user))


async def list_rooms(request: web.Request) -> web.StreamResponse:
    info = await _who(request)
    listings = await _ctx(request).rooms.visible(info.user)
    # Read positions and unread counts (§10): one more query for all the rooms.
    states = await _ctx(request).store.read_states(info.user.id)
    # retention_days only here, where the listing read it (create and direct answers do not).
    return json_response({"rooms": [{**protocol.room_body(r),
                                     "retention_days": r.retention_days,
                                     **reads.listing_fields(r, states)}
                                    for r in listings]})


async def create_room(request: web.Request) -> web.StreamResponse:
    info = await _who(request)
    body = await _body(request)
    private = body.get("private", False)
    if not isinstance(private, bool):
        raise BadRequest("'private' must be true or false")
    ctx = _ctx(request)
    room = await ctx.rooms.create(_string(body, "name"), private, info.user)
    room_announce.room_created(ctx, room, info.user)
    return json_response(protocol.room_body(RoomListing(room, True, 0)), 201)


async def add_member(request: web.Request) -> web.StreamResponse:
    info = await _who(request)
    body = await _body(request)
    ctx = _ctx(request)
    room, user, added = await ctx.rooms.add_member(
        request.match_info["room"], info.user, _string(body, "user"))
    if added:
        await room_announce.member_added(ctx, room, user)
    return json_response({"room": room.name, "user": user.name}, 201)


async def direct(request: web.Request) -> web.StreamResponse:
    info = await _who(request)
    body = await _body(request)
    ctx = _ctx(request)
    room, created = await ctx.rooms.direct(info.user, _string(body, "user"))
    members = tuple(await ctx.store.member_names(room.id))
    if created:
        room_announce.direct_opened(ctx, room, members)
    return json_response(protocol.room_body(RoomListing(room, True, 0, members)))


def _query_int(request: web.Request, key: str, default: int | None, low: int, high: int
               ) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {key!r} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {key!r} must be from {low} to {high}")
    return value


async def get_messages(request: web.Request) -> web.StreamResponse:
    info = await _who(request)
    ctx = _ctx(request)
    room = await ctx.rooms.readable(request.match_info["room"], info.user)
    before = _query_int(request, "before", None, 0, protocol.MAX_SEQ)
    after = _query_int(request, "after", None, 0, protocol.MAX_SEQ)
    if before is not None and after is not None:
        raise BadRequest("give 'before' or 'after', not both")
    limit = _query_int(request, "limit", protocol.HISTORY_DEFAULT_LIMIT, 1,
                       protocol.HISTORY_MAX_LIMIT)
    assert limit is not None
    thread = _query_int(request, "thread", None, 0, protocol.MAX_SEQ)
    messages, more = await read_history(ctx, room, before, after, limit, thread=thread)
    return json_response({"room": room.name, "more": more,
                          "messages": [protocol.message_body(m) for m in messages]})


async def get_presence(request: web.Request) -> web.StreamResponse:
    """Which members of the room are online now: the snapshot the `presence` changes update.
    Readable by whoever may read the room's history (the same check, the same errors)."""
    info = await _who(request)
    ctx = _ctx(request)
    room = await ctx.rooms.readable(request.match_info["room"], info.user)
    members = await ctx.store.member_names(room.id)  # by name
    looked_at = members[:PRESENCE_MAX_MEMBERS]
    online = await ctx.broker.online_users(looked_at)
    body: dict[str, Any] = {"room": room.name,
                            "online": sorted(name for name in looked_at if name in online)}
    if len(members) > len(looked_at):
        body["truncated"] = True
    return json_response(body)


async def post_message(request: web.Request) -> web.StreamResponse:
    info = await _who(request)
    ctx = _ctx(request)
    body = await _body(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise BadRequest("body needs a string field 'text'")
    protocol.check_text(text, ctx.config.limits.max_message_bytes)
    thread = threads.thread_field(body.get("thread"))
    check_send_rate(ctx, info.user.name)
    room = await ctx.rooms.readable(request.match_info["room"], info.user)
    thread = await threads.reply_root(ctx.store, room, thread)
    stored = await ctx.messages.post(room, info.user, text, thread=thread)
    return json_response({"room": stored.room, "seq": stored.seq, "id": stored.id,
                          "ts": stored.ts}, 201)


async def _bounded_body(request: web.Request, limit: int) -> bytes:
    """The body, or `TooLarge` once it passes `limit` bytes (read no further than that)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise TooLarge(f"the request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the request body is over the limit of {limit} bytes")
    return bytes(body)


async def post_hook(request: web.Request) -> web.StreamResponse:
    """`POST /hooks/{token}`: post the body's text to the hook's room as its bot, answered once
    the message is durable (docs/protocol.md, "Incoming webhooks")."""
    ctx = _ctx(request)
    hook = await ctx.store.hook_by_token(tokens.hash_token(request.match_info["token"]))
    if hook is None or hook.bot.disabled:
        # Unknown, revoked and disabled look alike, so a prober learns nothing from the answer.
        raise NotFound("no such hook (unknown or revoked)")
    limits = ctx.config.limits
    body = await _bounded_body(
        request, hooks.body_limit(limits.max_message_bytes, limits.max_frame_bytes))
    text = hooks.parse_body(body, request.content_type, limits.max_message_bytes)
    # Per hook, with the users' send rate; no user name contains ':', so keys never collide.
    check_send_rate(ctx, f"hook:{hook.id}")
    stored = await ctx.messages.post(hook.room, hook.bot, text)
    return json_response({"ok": True, "room": stored.room, "seq": stored.seq, "id": stored.id,
                          "ts": stored.ts})


async def healthz(request: web.Request) -> web.StreamResponse:
    # Answered by the event loop itself: a blocked loop fails this check by timing out.
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    if ctx.shutting_down:
        return json_response({"status": "shutting down"}, 503)
    problems: dict[str, str] = {}
    for name, check in (("store", ctx.store.ping), ("broker", ctx.broker.ping)):
        try:
            await asyncio.wait_for(check(), 2.0)
        except Exception as exc:
            problems[name] = getattr(exc, "message", None) or type(exc).__name__
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, 503)
    return json_response({"status": "ready"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_post("/api/rooms", create_room)
    app.router.add_post("/api/rooms/{room}/members", add_member)
    app.router.add_get("/api/rooms/{room}/messages", get_messages)
    app.router.add_post("/api/rooms/{room}/messages", post_message)
    app.router.add_get("/api/rooms/{room}/presence", get_presence)
    app.router.add_post("/api/direct", direct)
    app.router.add_post("/hooks/{token}", post_hook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    search_api.add_routes(app)  # GET /api/search
    files_api.add_routes(app)  # POST /api/rooms/{room}/files, GET /api/files/{id}[/thumbnail]
