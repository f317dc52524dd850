"""The Store contract for threads (docs/protocol.md §10, "Threads"): every backend in
`conftest.BACKENDS` stores a reply with its root's seq, pages a thread's replies by seq, gives
a page's roots their reply count and last reply, and tells a reply from a root so that a reply
to a reply, or to an unknown message, is refused."""

from __future__ import annotations

import pytest

from chatserver import threads
from chatserver.errors import BadRequest, NotFound
from chatserver.store.base import Room, Store, ThreadRoot, ThreadSummary, User

from .test_store import new, user
from .test_store_search import execute


@pytest.fixture
async def alice(store: Store) -> User:
    return await user(store, "alice")


@pytest.fixture
async def general(store: Store) -> Room:
    return await store.create_room("general", "public", None)


async def post(store: Store, room: Room, author: User, text: str, thread: int | None = None
               ) -> int:
    return (await store.append_message(new(room, author, text, thread=thread))).seq


async def test_a_reply_is_stored_and_read_back_with_its_roots_seq(
        store: Store, alice: User, general: Room) -> None:
    """A reply's append returns its root's seq, and history reads it back the same."""
    root = await post(store, general, alice, "root")
    stored = await store.append_message(new(general, alice, "reply", thread=root))
    assert stored.thread == root
    page = await store.messages_after(general.id, 0, 10)
    assert [(m.seq, m.thread) for m in page] == [(root, None), (stored.seq, root)]
    assert page[1] == stored


async def test_roots_in_history_carry_reply_count_and_last_reply(
        store: Store, alice: User, general: Room) -> None:
    """Both history directions give each root with replies its count and newest reply's seq;
    messages without replies, and replies, carry none."""
    first = await post(store, general, alice, "first")
    lonely = await post(store, general, alice, "nobody answers")
    r1 = await post(store, general, alice, "a", first)
    await post(store, general, alice, "main timeline")
    r2 = await post(store, general, alice, "b", first)
    for page in (await store.messages_after(general.id, 0, 10),
                 await store.messages_before(general.id, None, 10)):
        replies = {m.seq: m.replies for m in page}
        assert replies[first] == ThreadSummary(count=2, last=r2)
        assert replies[lonely] is None and replies[r1] is None and replies[r2] is None


async def test_a_root_counts_replies_beyond_the_page(
        store: Store, alice: User, general: Room) -> None:
    """A page holding only the root still counts every reply, the later ones included."""
    root = await post(store, general, alice, "root")
    last = 0
    for n in range(5):
        last = await post(store, general, alice, f"r{n}", root)
    page = await store.messages_before(general.id, root + 1, 1)
    assert [(m.seq, m.replies) for m in page] == [(root, ThreadSummary(count=5, last=last))]


async def test_thread_history_pages_only_that_threads_replies_by_seq(
        store: Store, alice: User, general: Room) -> None:
    """thread_after and thread_before page one thread's replies ascending, with history's
    cursor and limit rules, skipping the room's other messages and other threads."""
    root = await post(store, general, alice, "root")
    other = await post(store, general, alice, "other root")
    mine = []
    for n in range(5):
        mine.append(await post(store, general, alice, f"r{n}", root))
        await post(store, general, alice, f"o{n}", other)
    assert [m.seq for m in await store.thread_after(general.id, root, 0, 100)] == mine
    assert [m.seq for m in await store.thread_after(general.id, root, mine[1], 2)] == mine[2:4]
    assert [m.seq for m in await store.thread_before(general.id, root, None, 2)] == mine[3:]
    assert [m.seq for m in await store.thread_before(general.id, root, mine[3], 2)] == mine[1:3]
    page = await store.thread_after(general.id, root, 0, 1)
    assert (page[0].thread, page[0].text, page[0].user) == (root, "r0", "alice")
    assert await store.thread_after(general.id, root, 0, 0) == []
    assert await store.thread_after(general.id, other + 1000, 0, 10) == []


async def test_thread_root_tells_a_root_from_a_reply_and_an_unknown_seq(
        store: Store, alice: User, general: Room) -> None:
    """thread_root says whether a seq is a top-level message, a reply (naming its root), or
    nothing in that room."""
    root = await post(store, general, alice, "root")
    reply = await post(store, general, alice, "reply", root)
    elsewhere = await store.create_room("elsewhere", "public", None)
    assert await store.thread_root(general.id, root) == ThreadRoot(seq=root, thread=None)
    assert await store.thread_root(general.id, reply) == ThreadRoot(seq=reply, thread=root)
    assert await store.thread_root(general.id, reply + 1) is None
    assert await store.thread_root(elsewhere.id, root) is None


async def test_a_reply_to_a_reply_or_an_unknown_root_is_refused(
        store: Store, alice: User, general: Room) -> None:
    """reply_root accepts a top-level message of the room, refuses a reply (bad_request) and
    an unknown seq or another room's message (not_found)."""
    root = await post(store, general, alice, "root")
    reply = await post(store, general, alice, "reply", root)
    elsewhere = await store.create_room("elsewhere", "public", None)
    assert await threads.reply_root(store, general, root) == root
    assert await threads.reply_root(store, general, None) is None
    with pytest.raises(BadRequest):
        await threads.reply_root(store, general, reply)
    with pytest.raises(NotFound):
        await threads.reply_root(store, general, 999)
    with pytest.raises(NotFound):
        await threads.reply_root(store, elsewhere, root)


async def test_a_deleted_root_takes_no_reply_but_its_thread_stays_readable(
        store: Store, alice: User, general: Room) -> None:
    """Once a root is flagged deleted, a reply to it is not_found, while thread_root reports
    the flag and its existing replies still page."""
    root = await post(store, general, alice, "root")
    reply = await post(store, general, alice, "reply", root)
    await execute(store, "UPDATE messages SET deleted = (1 = 1) WHERE room_id = ? AND seq = ?",
                  general.id, root)
    assert await store.thread_root(general.id, root) == ThreadRoot(root, None, deleted=True)
    with pytest.raises(NotFound):
        await threads.reply_root(store, general, root)
    page, more = await threads.read_thread(store, general, root, None, None, 10)
    assert ([m.seq for m in page], more) == ([reply], False)
