"""Server URLs (pure): the WebSocket URL and the HTTP base URL for a server URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def websocket_url(url: str) -> str:
    """The WebSocket URL for a server URL: `http://h:p[/prefix]` -> `ws://h:p[/prefix]/ws`
    (a path already ending in `/ws` is kept); `ws://` and `wss://` URLs are used as given."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL must start with http://, https://, ws:// or wss:// "
                         f"and name a host, got {url!r}")
    scheme = "ws" if parts.scheme == "http" else "wss"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, path if path.endswith("/ws") else path + "/ws",
                       "", ""))


def http_url(url: str) -> str:
    """The HTTP base URL for a server or WebSocket URL (no trailing slash)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL must start with http://, https://, ws:// or wss:// "
                         f"and name a host, got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[:-3]
    return urlunsplit((scheme, parts.netloc, path, "", ""))
