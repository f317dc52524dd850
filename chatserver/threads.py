"""Threads (docs/protocol.md §10, "Threads"): which message a reply may hang from, and the
pages of one thread's replies.

A reply's root is checked here, on the read path, before the message goes to the store's
writer; the writers only carry the `thread` column. Why not inside the writer: PostgreSQL
appends a whole batch in one statement, and a root check there would either fail the batch or
need per-row error plumbing. The gap between check and commit loses nothing: a root is never
removed but by retention or deletion. Retention removes a room's oldest messages first, so it
leaves younger replies of a removed root whatever we do; a root deleted in that gap gets a
reply it would have got had the reply come a moment sooner, and replies of a deleted root stay
(§10 "Edits and deletions"). Either way the result is a state the contract already allows.
"""

from __future__ import annotations

from typing import Any

from chatserver.errors import BadRequest, NotFound
from chatserver.protocol import MAX_SEQ
from chatserver.store.base import Room, Store, StoredMessage, ThreadRoot


def root_deleted(root: ThreadRoot) -> bool:
    """Whether a would-be root was deleted: the one place a reply checks the deletions'
    flag (the stores read it from messages.deleted once that column exists)."""
    return root.deleted


async def reply_root(store: Store, room: Room, thread: int | None) -> int | None:
    """`thread` if a reply may hang from it: a top-level message of `room` that is not
    deleted. `NotFound` for an unknown or deleted one, `BadRequest` for a reply."""
    if thread is None:
        return None
    root = await store.thread_root(room.id, thread)
    if root is None or root_deleted(root):
        raise NotFound(f"there is no message {thread} to reply to in {room.name}")
    if root.thread is not None:
        raise BadRequest(
            f"message {thread} is itself a reply; reply to its thread's root, {root.thread}"
        )
    return thread


async def read_thread(
    store: Store, room: Room, root: int, before: int | None, after: int | None, limit: int
) -> tuple[list[StoredMessage], bool]:
    """One page of the thread's replies ascending by seq, and whether more lie beyond it in
    the paging direction (`history`'s rules). A deleted root's thread stays readable."""
    found = await store.thread_root(room.id, root)
    if found is None:
        raise NotFound(f"there is no thread {root} in {room.name}")
    if found.thread is not None:
        raise BadRequest(f"message {root} is a reply, not a thread's root ({found.thread})")
    if after is not None:
        page = await store.thread_after(room.id, root, after, limit + 1)
        return page[:limit], len(page) > limit
    page = await store.thread_before(room.id, root, before, limit + 1)
    return page[-limit:] if len(page) > limit else page, len(page) > limit


THREAD_RULE = f"'thread' must be an integer seq from 0 to {MAX_SEQ}"


def thread_field(value: Any) -> int | None:
    """A JSON body's optional `thread`: absent or null, else a seq (never a bool)."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise BadRequest(THREAD_RULE)
    return value


def thread_form_field(raw: bytes) -> int | None:
    """A multipart form's optional `thread` (uploads): empty for none, as a form's empty
    input sends it, else the seq in ASCII decimal digits; `thread_field`'s range."""
    if not raw:
        return None
    if not raw.isdigit():  # bytes.isdigit is ASCII only: no sign, space or other digits
        raise BadRequest(THREAD_RULE)
    return thread_field(int(raw))


__all__ = ["THREAD_RULE", "read_thread", "reply_root", "root_deleted", "thread_field",
           "thread_form_field"]
