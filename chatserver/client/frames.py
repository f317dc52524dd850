"""The typed frames the client returns: what the server sends (docs/protocol.md)."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class Reactions(TypedDict):
    """One emoji's reactions on a message (in `history`, replay and export)."""

    emoji: str
    count: int
    users: list[str]  # in the order they reacted, at most 20; `count` is exact


class FileInfo(TypedDict):
    """A message's file (docs/protocol.md §10, "Files"); the URLs are relative to the server."""

    id: str
    name: str
    size: int
    content_type: str
    url: str
    thumbnail_url: NotRequired[str]


class Message(TypedDict):
    """A stored message (docs/protocol.md, `message` frame; §10 for the optional fields that
    `history` and a replay carry: a message's current state)."""

    op: Literal["message"]
    room: str
    seq: int
    id: str
    user: str
    text: str
    html: str
    ts: str
    stream: NotRequired[str]
    aborted: NotRequired[bool]
    thread: NotRequired[int]  # a reply's root seq
    replies: NotRequired[int]  # a root's reply count (history and replay only)
    last_reply: NotRequired[int]
    edited: NotRequired[str]  # when it was last edited (history and replay only)
    deleted: NotRequired[bool]  # text and html are "" (history and replay only)
    reactions: NotRequired[list[Reactions]]  # history and replay only
    mentions: NotRequired[list[str]]
    mentions_room: NotRequired[bool]
    file: NotRequired[FileInfo]


class Edited(TypedDict):
    """A room event: `user` edited message `target`; `text` and `html` are its text now
    (replayed, the current text rather than this edit's)."""

    op: Literal["edited"]
    room: str
    seq: int  # the event's own seq in the room's log
    target: int
    user: str
    text: str
    html: str
    edited: str  # when (ISO 8601, UTC)


class Deleted(TypedDict):
    """A room event: `user` deleted message `target`."""

    op: Literal["deleted"]
    room: str
    seq: int
    target: int
    user: str


class Reaction(TypedDict):
    """A room event: `user` added (`added`) or removed a reaction `emoji` on `target`."""

    op: Literal["reaction"]
    room: str
    seq: int
    target: int
    user: str
    emoji: str
    added: bool


# Every frame of a room's log, as `ChatClient.events()` yields them; `op` tells them apart
# (and narrows the type: `if event["op"] == "reaction": event["emoji"]`).
Event = Message | Edited | Deleted | Reaction


class Ack(TypedDict):
    """The answer to a `send` or `stream_end`: the message is durable."""

    op: str
    ref: str | None
    room: str
    seq: int
    id: str
    ts: str


class EventAck(TypedDict):
    """The answer to an `edit` or `delete`: the event is durable, with seq `seq`; `target` is
    the message's seq."""

    op: str
    ref: str | None
    room: str
    seq: int
    target: int


class ReactionAck(TypedDict):
    """The answer to a `react`: `changed` false when the user already had that reaction (or,
    removing, did not have it); then nothing was stored and there is no `seq`."""

    op: str
    ref: str | None
    room: str
    target: int
    changed: bool
    seq: NotRequired[int]


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


class SearchResult(TypedDict):
    """One search hit (docs/protocol.md §10, "Search")."""

    room: str
    seq: int
    thread: int | None  # a reply's root seq; None for a top-level message
    user: str
    ts: str
    snippet: str  # HTML: the escaped text (an excerpt), matches in <mark>


class SearchPage(TypedDict):
    """One page of search results, by relevance then newest first; `next` is the cursor for
    the next page (pass it as `before`), None on the last."""

    results: list[SearchResult]
    next: str | None
