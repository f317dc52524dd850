"""One root exception with a stable code; close codes the server uses.

Reply errors (`ChatError`) answer one request and keep the connection; disconnects carry a close
code. Exception text from elsewhere never reaches a client: only `ChatError.message`, which is
written for the user, does.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ChatError(Exception):
    """An error with a stable `code` (PROTOCOL section 5) and a sentence for the user."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadRequest(ChatError):
    code = "bad_request"
    http_status = 400


class UnknownOp(ChatError):
    code = "unknown_op"
    http_status = 400


class NotFound(ChatError):
    code = "not_found"
    http_status = 404


class Forbidden(ChatError):
    code = "forbidden"
    http_status = 403


class Unauthorized(ChatError):
    code = "unauthorized"
    http_status = 401


class Conflict(ChatError):
    code = "conflict"
    http_status = 409


class TooLarge(ChatError):
    code = "too_large"
    http_status = 413


class RateLimited(ChatError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=round(retry_after, 3))
        self.retry_after = retry_after


class Overloaded(ChatError):
    code = "overloaded"
    http_status = 503


class Unavailable(Overloaded):
    """Refused before any work (HTTP 503 with Retry-After): shutting down, or a cap reached."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=round(retry_after, 1))
        self.retry_after = retry_after


class Internal(ChatError):
    code = "internal"
    http_status = 500


class StoreUnavailable(Overloaded):
    """The store cannot take or serve data right now; nothing was acknowledged."""


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect, possibly elsewhere
    UNSUPPORTED_DATA = 1003  # binary frame
    POLICY = 1008  # credentials revoked, repeated abuse
    TOO_BIG = 1009  # frame over limits.max_frame_bytes
    INTERNAL = 1011
    TRY_AGAIN_LATER = 1013  # overloaded, or evicted as a slow consumer


class BrokerUnavailable(Overloaded):
    """The broker cannot be reached right now (e.g. Redis is down or restarting)."""
