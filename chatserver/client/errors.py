"""The client's errors: one hierarchy under `ChatClientError` (docs/client.md, "Errors")."""

from __future__ import annotations

from typing import Any


class ChatClientError(Exception):
    """Base of every error the client raises; `code` is stable (the server's error codes, plus
    `connection_lost`, `timeout`, `unreachable` and `stream_ended` for the client's own)."""

    code: str = "client_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ServerError(ChatClientError):
    """The server refused a request: an `error` frame, or an HTTP error body."""

    def __init__(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code") or frame.get("error") or "internal")
        super().__init__(str(frame.get("message") or code), code=code)
        self.frame = frame

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AuthenticationFailed(ServerError):
    """The server refused the token (HTTP 401, or 403 for a refused origin). Retrying with
    the same token cannot help, so the client never does."""


class RetryLater(ServerError):
    """A refusal that passes with time; `retry_after` is the server's hint in seconds (the
    frame's `retry_after`, or HTTP Retry-After), None when it gave none."""

    @property
    def retry_after(self) -> float | None:
        value = self.frame.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


class RateLimited(RetryLater):
    """`rate_limited`: wait `retry_after` seconds before sending again."""


class Overloaded(RetryLater):
    """`overloaded`: the server sheds load or cannot store right now; nothing was stored."""


class NotFound(ServerError):
    pass


class Forbidden(ServerError):
    pass


class TooLarge(ServerError):
    pass


class ConnectionLost(ChatClientError):
    """The connection dropped (or the client was closed) before the request was answered."""

    code = "connection_lost"


class RequestTimeout(ChatClientError, TimeoutError):
    """No answer within `request_timeout`."""

    code = "timeout"


class Unreachable(ChatClientError):
    """No connection could be made: `connect_timeout` passed, or the server answered the
    upgrade with a status retrying cannot fix (`status`, e.g. 404 for a wrong URL)."""

    code = "unreachable"

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


_SERVER_ERRORS: dict[str, type[ServerError]] = {
    "unauthorized": AuthenticationFailed, "rate_limited": RateLimited,
    "overloaded": Overloaded, "not_found": NotFound, "forbidden": Forbidden,
    "too_large": TooLarge,
}


def server_error(frame: dict[str, Any]) -> ServerError:
    """The exception for an `error` frame or HTTP error body, by its code."""
    code = str(frame.get("code") or frame.get("error") or "internal")
    return _SERVER_ERRORS.get(code, ServerError)(frame)
