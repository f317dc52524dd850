"""Who is asking: bearer tokens, the session cookie with its Origin check, and login.

Tokens are 256-bit random strings; the store keeps only their SHA-256 (a fast hash is right for
high-entropy secrets; passwords get argon2id, off the loop). Failures are HTTP 401 (no, bad or
revoked credentials, disabled user) or 403 (cookie from a foreign Origin), raised before any
WebSocket upgrade is accepted.
"""

from __future__ import annotations

from aiohttp import web

from chatserver import credentials
from chatserver.context import ChatContext
from chatserver.errors import Forbidden, RateLimited, Unauthorized
from chatserver.store.base import TokenInfo, User
from chatserver.tokens import hash_token, new_token

COOKIE_NAME = "chat_session"
# Verified against when the username is unknown, so a miss costs the same time as a hit.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$QbgnCez8KguI4zMDE1YFPg$"
    "fQLD0WMk7yZn6rgojv5AECKqhKzLf0y0JFdIiRcQNPM"
)


def _bearer(request: web.BaseRequest) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return value.strip()


def own_origin(request: web.BaseRequest) -> str:
    return f"{request.scheme}://{request.host}".lower()


def origin_allowed(request: web.BaseRequest, allowed: tuple[str, ...]) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    origin = origin.rstrip("/").lower()
    return origin == own_origin(request) or origin in {o.rstrip("/").lower() for o in allowed}


async def authenticate(ctx: ChatContext, request: web.BaseRequest, *,
                       websocket: bool = False) -> TokenInfo:
    """The token's owner, or `Unauthorized`/`Forbidden` naming what to fix."""
    token = _bearer(request)
    via_cookie = False
    if token is None:
        token = request.cookies.get(COOKIE_NAME)
        via_cookie = token is not None
    if not token:
        raise Unauthorized("no credentials: send 'Authorization: Bearer <token>' or log in")
    info = await ctx.store.token_info(hash_token(token))
    if info is None:
        raise Unauthorized("the token is unknown or was revoked; log in again")
    if info.user.disabled:
        raise Unauthorized(f"user {info.user.name!r} is disabled")
    if via_cookie and _needs_origin_check(request, websocket):
        if not origin_allowed(request, ctx.config.server.allowed_origins):
            # Cross-site WebSocket hijacking and CSRF defence for cookie-authenticated calls.
            raise Forbidden("Origin not allowed for cookie authentication; add it to "
                            "[server] allowed_origins or use a bearer token")
    return info


def _needs_origin_check(request: web.BaseRequest, websocket: bool) -> bool:
    if websocket:
        return True
    # State-changing HTTP calls from a browser carry Origin; reads are harmless.
    return request.method not in ("GET", "HEAD", "OPTIONS") or "Origin" in request.headers


async def login(ctx: ChatContext, username: str, password: str, address: str,
                now: float) -> tuple[str, User]:
    """Verify the password off the loop; return a new session token and the user."""
    for limiter, key, what in (
        (ctx.login_user_limiter, username, "this user"),
        (ctx.login_address_limiter, address, "this address"),
    ):
        wait = limiter.take(key, now)
        if wait > 0:
            raise RateLimited(f"too many login attempts for {what}; retry later", wait)
    found = await ctx.store.get_password_hash(username)
    password_hash = found[1] if found is not None else _DUMMY_HASH
    ok = await ctx.executors.verify_password(password_hash, password)
    if found is None or not ok:
        raise Unauthorized("wrong username or password")
    user = found[0]
    if user.disabled:
        raise Unauthorized(f"user {user.name!r} is disabled")
    token = new_token()
    await ctx.store.add_token(user.id, hash_token(token), "session")
    return token, user


async def logout(ctx: ChatContext, info: TokenInfo) -> int:
    """Revoke the token; close its open sockets with 1008, here at once and on every other
    instance when the `logout` event reaches it (chatserver.credentials). Returns how many
    were closed on this instance: the others' count is not known when this answers."""
    await ctx.store.revoke_token(info.token_hash)
    closed = credentials.close_token(ctx.connections, info.token_hash, credentials.LOGGED_OUT)
    # After the revocation is stored: a socket opened meanwhile elsewhere was refused.
    ctx.broker.publish(credentials.logout_event(info.token_hash))
    return closed
