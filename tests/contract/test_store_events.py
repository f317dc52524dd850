"""The Store contract for room events (docs/protocol.md §10): edits, deletions and reactions
take the room's next seq like messages, history shows each message's current state, the room
log replays messages and events in seq order, and a deletion erases the text from storage."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from chatserver.errors import Forbidden, NotFound
from chatserver.search import parse_query
from chatserver.store.base import NewFile, Reaction, Room, RoomEvent, Store, StoredMessage, User
from chatserver.store.sqlite import SqliteStore

from .test_store import history, new, user


async def fetch(store: Store, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read rows behind the store's back (`?` placeholders, `$n` for PostgreSQL)."""
    if isinstance(store, SqliteStore):
        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in conn.execute(sql, args).fetchall()]

        return await store.run_in_writer(read)
    numbered = sql
    for n in range(1, len(args) + 1):
        numbered = numbered.replace("?", f"${n}", 1)
    conn = await asyncpg.connect(store._dsn)  # type: ignore[attr-defined]
    try:
        return [tuple(row) for row in await conn.fetch(numbered, *args)]
    finally:
        await conn.close()


@pytest.fixture
async def people(store: Store) -> tuple[User, User, User]:
    return (await user(store, "alice"), await user(store, "bob"),
            await user(store, "root", is_admin=True))


@pytest.fixture
async def general(store: Store) -> Room:
    return await store.create_room("general", "public", None)


async def post(store: Store, room: Room, author: User, text: str) -> StoredMessage:
    return await store.append_message(new(room, author, text))


async def test_events_take_contiguous_seqs_interleaved_with_messages(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """Edits, deletions and reactions take the room's next seq: one gap-free sequence shared
    with messages, and latest_seq counts them."""
    alice, bob, _ = people
    first = await post(store, general, alice, "one")
    edit = await store.edit_message(general.id, first.seq, alice, "uno", "<p>uno</p>")
    second = await post(store, general, bob, "two")
    reaction = await store.react(general.id, first.seq, bob, "👍", True)
    deletion, files = await store.delete_message(general.id, second.seq, bob)
    third = await post(store, general, alice, "three")
    assert reaction is not None
    assert [first.seq, edit.seq, second.seq, reaction.seq, deletion.seq, third.seq] == [
        1, 2, 3, 4, 5, 6]
    assert files == ()
    assert await store.latest_seq(general.id) == 6
    assert edit == RoomEvent("general", 2, "edited", 1, "alice", edit.ts, "uno", "<p>uno</p>")
    assert (reaction.kind, reaction.target, reaction.user, reaction.emoji, reaction.added) == (
        "reaction", 1, "bob", "👍", True)
    assert (deletion.kind, deletion.target, deletion.user) == ("deleted", 3, "bob")


async def test_concurrent_events_and_appends_stay_gap_free(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """Events racing appends (one group commit) still give every seq exactly once."""
    alice, bob, _ = people
    target = await post(store, general, alice, "target")
    results = await asyncio.gather(
        *(post(store, general, bob, f"m{i}") for i in range(20)),
        *(store.react(general.id, target.seq, bob, f":e{i}:", True) for i in range(20)),
    )
    seqs = sorted(r.seq for r in results if r is not None)
    assert seqs == list(range(2, 42))


async def test_history_shows_current_state(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """History carries the edited text with its edit time, deletions erased with deleted set,
    and reactions by first use with exact counts and users in the order they reacted."""
    alice, bob, root = people
    a = await post(store, general, alice, "hello")
    b = await post(store, general, bob, "doomed")
    edit = await store.edit_message(general.id, a.seq, alice, "hello **all**", "<p>hi</p>")
    await store.react(general.id, a.seq, bob, ":tada:", True)
    await store.react(general.id, a.seq, alice, "👍", True)
    await store.react(general.id, a.seq, alice, ":tada:", True)
    await store.react(general.id, b.seq, alice, "👍", True)
    await store.delete_message(general.id, b.seq, root)  # an admin may delete anyone's
    shown = {m.seq: m for m in await history(store, general)}
    assert (shown[a.seq].text, shown[a.seq].html, shown[a.seq].edited) == (
        "hello **all**", "<p>hi</p>", edit.ts)
    assert shown[a.seq].reactions == (
        Reaction(":tada:", 2, ("bob", "alice")), Reaction("👍", 1, ("alice",)))
    assert not shown[a.seq].deleted
    gone = shown[b.seq]
    assert (gone.text, gone.html, gone.deleted, gone.reactions, gone.user, gone.id) == (
        "", "", True, (), "bob", b.id)
    before = await store.messages_before(general.id, None, 10)
    assert [m.seq for m in before] == [a.seq, b.seq] and before[0] == shown[a.seq]


async def test_reactions_are_idempotent_and_capped(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """Adding a reaction the user has, or removing one they lack, stores nothing (None, no
    seq); removing one lowers the count; users are capped at 20 while count stays exact."""
    alice, bob, _ = people
    m = await post(store, general, alice, "vote")
    assert await store.react(general.id, m.seq, bob, "👍", False) is None
    assert await store.react(general.id, m.seq, bob, "👍", True) is not None
    assert await store.react(general.id, m.seq, bob, "👍", True) is None
    assert await store.latest_seq(general.id) == 2
    voters = [await user(store, f"u{i:02d}") for i in range(25)]
    for voter in voters:
        await store.react(general.id, m.seq, voter, "👍", True)
    removed = await store.react(general.id, m.seq, bob, "👍", False)
    assert removed is not None and not removed.added
    (shown,) = await history(store, general)
    (thumbs,) = shown.reactions
    assert thumbs.count == 25 and thumbs.users == tuple(v.name for v in voters[:20])


async def test_permissions_and_unknown_targets(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """Only the author or an admin edits or deletes (Forbidden); an unknown seq, another
    room's message or a deleted message is NotFound for edit, delete and react alike, and no
    refused event takes a seq."""
    alice, bob, root = people
    other = await store.create_room("other", "public", None)
    m = await post(store, general, alice, "mine")
    elsewhere = await post(store, other, alice, "there")
    with pytest.raises(Forbidden):
        await store.edit_message(general.id, m.seq, bob, "hijack", "")
    with pytest.raises(Forbidden):
        await store.delete_message(general.id, m.seq, bob)
    await store.edit_message(general.id, m.seq, root, "moderated", "<p>moderated</p>")
    for seq in (99, elsewhere.seq + 1):
        with pytest.raises(NotFound):
            await store.edit_message(general.id, seq, alice, "x", "x")
        with pytest.raises(NotFound):
            await store.react(general.id, seq, alice, "👍", True)
    await store.delete_message(general.id, m.seq, alice)
    with pytest.raises(NotFound):
        await store.edit_message(general.id, m.seq, alice, "again", "")
    with pytest.raises(NotFound):
        await store.delete_message(general.id, m.seq, alice)
    with pytest.raises(NotFound):
        await store.react(general.id, m.seq, bob, "👍", True)
    assert await store.latest_seq(general.id) == 3


async def test_room_log_replays_messages_and_events_in_seq_order(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """room_log_after merges messages (current state) and events by seq, after a cursor and
    up to a limit; an edit replays with the message's current text."""
    alice, bob, _ = people
    a = await post(store, general, alice, "a")
    await store.edit_message(general.id, a.seq, alice, "a1", "<p>a1</p>")
    b = await post(store, general, bob, "b")
    await store.react(general.id, b.seq, alice, "👍", True)
    await store.edit_message(general.id, a.seq, alice, "a2", "<p>a2</p>")
    await store.react(general.id, b.seq, alice, "👍", False)
    await store.delete_message(general.id, b.seq, bob)
    log = await store.room_log_after(general.id, 0, 100)
    kinds = [(e.seq, "message" if isinstance(e, StoredMessage) else e.kind) for e in log]
    assert kinds == [(1, "message"), (2, "edited"), (3, "message"), (4, "reaction"),
                     (5, "edited"), (6, "reaction"), (7, "deleted")]
    assert isinstance(log[1], RoomEvent) and log[1].text == "a2"  # current text
    assert isinstance(log[0], StoredMessage) and log[0].text == "a2"
    assert [e.seq for e in await store.room_log_after(general.id, 2, 3)] == [3, 4, 5]
    assert [e.seq for e in await store.room_log_after(general.id, 7, 3)] == []
    assert await store.room_log_after(general.id, 0, 0) == []


async def test_delete_erases_text_from_storage_and_search(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """A deleted message's row holds no text or html, its reactions are gone, search no
    longer finds it, and an edit is found by its new words only."""
    alice, bob, _ = people
    secret = await post(store, general, alice, "the launch code is zebrafish")
    edited = await post(store, general, alice, "original wording")
    await store.react(general.id, secret.seq, bob, "👀", True)
    await store.edit_message(general.id, edited.seq, alice, "revised phrasing", "<p>r</p>")
    hits = await store.search_messages(alice.id, parse_query("zebrafish"))
    assert [h.seq for h in hits.hits] == [secret.seq]
    await store.delete_message(general.id, secret.seq, alice)
    rows = await fetch(store, "SELECT text, html FROM messages WHERE room_id = ? AND seq = ?",
                       general.id, secret.seq)
    assert rows == [("", "")]
    assert await fetch(store, "SELECT emoji FROM reactions WHERE room_id = ?", general.id) == []
    assert (await store.search_messages(alice.id, parse_query("zebrafish"))).hits == ()
    assert (await store.search_messages(alice.id, parse_query("wording"))).hits == ()
    hits = await store.search_messages(alice.id, parse_query("revised"))
    assert [h.seq for h in hits.hits] == [edited.seq]


async def test_delete_removes_the_file_row(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """Deleting an upload's message removes its file's row and returns its id."""
    alice, _, _ = people
    upload = await store.add_file(NewFile(
        id="f" * 22, room_id=general.id, uploader_id=alice.id, uploader="alice",
        name="a.txt", size=3, content_type="application/octet-stream", sha256="0" * 64))
    posted = await store.append_message(new(general, alice, "a.txt", file=upload))
    _, files = await store.delete_message(general.id, posted.seq, alice)
    assert files == (upload.id,)
    assert await store.get_file(upload.id) is None


async def test_retention_removes_events_and_reactions(
    store: Store, people: tuple[User, User, User], general: Room
) -> None:
    """Retention's removal of messages takes their events and reactions with it; events of
    kept messages stay, and the room's seq is not lowered."""
    alice, bob, _ = people
    old = await post(store, general, alice, "old")
    await store.react(general.id, old.seq, bob, "👍", True)
    await store.edit_message(general.id, old.seq, alice, "old2", "<p>old2</p>")
    await asyncio.sleep(0.005)
    kept = await post(store, general, alice, "kept")
    await store.react(general.id, kept.seq, bob, "👍", True)
    (cutoff,) = (await fetch(store, "SELECT ts FROM messages WHERE room_id = ? AND seq = ?",
                             general.id, kept.seq))[0]
    removed = await store.remove_messages_before(general.id, int(cutoff), 100)
    assert removed.count == 1
    log = await store.room_log_after(general.id, 0, 100)
    assert [e.seq for e in log] == [kept.seq, kept.seq + 1]
    assert len(await fetch(store, "SELECT * FROM reactions WHERE room_id = ?", general.id)) == 1
    assert await store.latest_seq(general.id) == 5
