"""An asyncio client for chatserver: connect, join, send, stream and read messages across
reconnects; edit, delete, react, mark read; follow edits, deletions and reactions with
`events()`; read history and search over HTTP.

The client survives real networks: when the connection drops (server restart, a killed
instance, 1001 or 1013) it reconnects with exponential backoff and full jitter — to the next
URL when several are given — and re-joins every room with `after` = the last seq it delivered,
so `messages()` yields each room's messages once, in seq order, without a gap — or, for a
client that uses `events()` instead, every message, edit, deletion and reaction (a resume the
server truncates at `replay_max` is completed by re-joining where its replay stopped).

    async with ChatClient("ws://127.0.0.1:8080/ws", token) as chat:
        await chat.join("general")
        ack = await chat.send("general", "hello")
        async for message in chat.messages():
            print(message["user"], message["text"])

Errors are one hierarchy under `ChatClientError` (docs/client.md, "Errors"). A refused token
(HTTP 401) is never retried: `connect()` raises `AuthenticationFailed`, and a reconnect that
meets it ends the client (pending requests and `messages()` raise it).

Requests in flight when a connection drops fail with `ConnectionLost`; a `send` that failed
that way may or may not have been stored (its ack was lost) — check history before resending.

The package: `core` (ChatClient), `iterators` (messages(), events()), `stream` (Stream),
`frames` (typed results), `errors`, `backoff` (reconnect timing, pure), `urls` (pure), `http`
(the REST side).
"""

from __future__ import annotations

from .backoff import (
    AFTER_SERVER_HINT,
    BACKOFF_BASE,
    BACKOFF_CAP,
    SPREAD_CLOSE_CODES,
    reconnect_delay,
)
from .backoff import _retry_after as _retry_after
from .core import HISTORY_PAGE_MAX, MESSAGE_QUEUE_MAX, SEARCH_LIMIT, ChatClient
from .core import log as log
from .errors import _SERVER_ERRORS as _SERVER_ERRORS
from .errors import (
    AuthenticationFailed,
    ChatClientError,
    ConnectionLost,
    Forbidden,
    NotFound,
    Overloaded,
    RateLimited,
    RequestTimeout,
    RetryLater,
    ServerError,
    TooLarge,
    Unreachable,
    server_error,
)
from .frames import (
    Ack,
    Deleted,
    Edited,
    Event,
    EventAck,
    FileInfo,
    HistoryPage,
    Joined,
    Message,
    Reaction,
    ReactionAck,
    Reactions,
    SearchPage,
    SearchResult,
)
from .stream import STREAM_GIVE_UP_TIMEOUT, Stream
from .urls import http_url, websocket_url

__all__ = [
    "AFTER_SERVER_HINT",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "HISTORY_PAGE_MAX",
    "MESSAGE_QUEUE_MAX",
    "SEARCH_LIMIT",
    "SPREAD_CLOSE_CODES",
    "STREAM_GIVE_UP_TIMEOUT",
    "Ack",
    "AuthenticationFailed",
    "ChatClient",
    "ChatClientError",
    "ConnectionLost",
    "Deleted",
    "Edited",
    "Event",
    "EventAck",
    "FileInfo",
    "Forbidden",
    "HistoryPage",
    "Joined",
    "Message",
    "NotFound",
    "Overloaded",
    "RateLimited",
    "Reaction",
    "ReactionAck",
    "Reactions",
    "RequestTimeout",
    "RetryLater",
    "SearchPage",
    "SearchResult",
    "ServerError",
    "Stream",
    "TooLarge",
    "Unreachable",
    "http_url",
    "reconnect_delay",
    "server_error",
    "websocket_url",
]
