"""The typed frames the client returns: what the server sends (docs/protocol.md)."""

from __future__ import annotations

from typing import NotRequired, TypedDict


class Message(TypedDict):
    """A stored message (docs/protocol.md, `message` frame)."""

    op: str
    room: str
    seq: int
    id: str
    user: str
    text: str
    html: str
    ts: str
    stream: NotRequired[str]
    aborted: NotRequired[bool]


class Ack(TypedDict):
    """The answer to a `send` or `stream_end`: the message is durable."""

    op: str
    ref: str | None
    room: str
    seq: int
    id: str
    ts: str


class Joined(TypedDict):
    op: str
    ref: str | None
    room: str
    seq: int
    truncated: NotRequired[bool]


class HistoryPage(TypedDict):
    """One page of history, ascending by seq; `more` says more lie in the paging direction."""

    room: str
    messages: list[Message]
    more: bool
