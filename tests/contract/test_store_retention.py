"""The Store contract for retention: every backend in `conftest.BACKENDS` keeps a per-room
retention setting and removes a room's oldest messages before a cut-off in bounded batches,
idempotently, without ever giving a removed seq out again."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from chatserver.errors import BadRequest, NotFound
from chatserver.store.base import NewFile, RemovedMessages, Room, Store, StoredMessage, User
from chatserver.store.sqlite import SqliteStore

from .test_store import StoreFactory, history, new, user


def _ms(message: StoredMessage) -> int:
    moment = dt.datetime.fromisoformat(message.ts.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


async def _send(store: Store, room: Room, author: User, count: int, tag: str
                ) -> list[StoredMessage]:
    return [await store.append_message(new(room, author, f"{tag} {i}")) for i in range(count)]


async def _old_then_new(store: Store, room: Room, author: User, old: int, kept: int
                        ) -> tuple[list[StoredMessage], int]:
    """`old` messages, then `kept` ones stored at least 5 ms later; and a cut-off between."""
    before = await _send(store, room, author, old, "old")
    await asyncio.sleep(0.005)  # ts has millisecond resolution: keep the two sides apart
    after = await _send(store, room, author, kept, "new")
    cutoff = _ms(after[0])
    assert all(_ms(m) < cutoff for m in before)
    return before + after, cutoff


async def test_retention_is_set_listed_and_validated(store: Store) -> None:
    """set_retention shows in rooms_visible_to and rooms_with_retention (only rooms not kept
    forever, by id); 0 restores forever; an unknown room is NotFound, days outside 0..36500
    BadRequest."""
    alice = await user(store, "alice")
    general = await store.create_room("general", "public", None)
    ops = await store.create_room("ops", "private", alice.id)
    await store.create_room("random", "public", None)
    assert await store.rooms_with_retention() == []
    await store.set_retention(ops.id, 36500)
    await store.set_retention(general.id, 30)
    assert await store.rooms_with_retention() == [(general, 30), (ops, 36500)]
    listed = {r.room.name: r.retention_days for r in await store.rooms_visible_to(alice.id)}
    assert listed == {"general": 30, "ops": 36500, "random": 0}
    await store.set_retention(ops.id, 0)
    assert await store.rooms_with_retention() == [(general, 30)]
    with pytest.raises(NotFound):
        await store.set_retention(ops.id + 1000, 1)
    for days in (-1, 36501):
        with pytest.raises(BadRequest):
            await store.set_retention(general.id, days)
    assert await store.rooms_with_retention() == [(general, 30)]


async def test_only_older_messages_of_that_room_are_removed_and_seqs_stay_unused(
        store: Store) -> None:
    """remove_messages_before removes only the room's messages stored before the cut-off;
    other rooms keep theirs, latest_seq does not move, and the next append takes the next seq."""
    alice = await user(store, "alice")
    general = await store.create_room("general", "public", None)
    other = await store.create_room("other", "public", None)
    sent, cutoff = await _old_then_new(store, general, alice, 4, 2)
    await _send(store, other, alice, 3, "other")
    assert (await store.remove_messages_before(general.id, cutoff, 100)).count == 4
    assert [m.seq for m in await history(store, general)] == [5, 6]
    assert await history(store, general) == sent[4:]
    assert [m.seq for m in await history(store, other)] == [1, 2, 3]
    assert await store.latest_seq(general.id) == 6
    assert [m.seq for m in await store.messages_before(general.id, None, 10)] == [5, 6]
    assert (await store.append_message(new(general, alice, "later"))).seq == 7
    assert (await store.remove_messages_before(other.id, 0, 100)).count == 0
    assert (await store.remove_messages_before(general.id + 1000, cutoff, 100)).count == 0


async def test_removal_goes_oldest_first_in_batches_of_at_most_limit(store: Store) -> None:
    """Each call removes at most `limit` messages, oldest first; a call with none left
    removes nothing."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", None)
    _, cutoff = await _old_then_new(store, room, alice, 7, 1)
    counts = []
    for _ in range(4):
        counts.append((await store.remove_messages_before(room.id, cutoff, 3)).count)
        remaining = [m.seq for m in await history(store, room)]
        assert remaining == list(range(1 + sum(counts), 9))
    assert counts == [3, 3, 1, 0]
    assert (await store.remove_messages_before(room.id, cutoff, 0)).count == 0


async def test_instances_removing_at_once_remove_each_message_once(
        make_store: StoreFactory) -> None:
    """Two stores on one storage (two instances) removing concurrently remove every old
    message exactly once between them, and the newer ones not at all."""
    first, second = make_store(), make_store()
    await first.open()
    await second.open()
    alice = await user(first, "alice")
    room = await first.create_room("general", "public", None)
    _, cutoff = await _old_then_new(first, room, alice, 40, 3)

    async def sweep(store: Store) -> int:  # what the retention job does: on while `more`
        total = 0
        while True:
            removed = await store.remove_messages_before(room.id, cutoff, 4)
            total += removed.count
            if not removed.more:
                return total

    counts = await asyncio.gather(*(sweep(store) for _ in range(6)
                                    for store in (first, second)))
    assert sum(counts) == 40
    assert [m.seq for m in await history(second, room)] == [41, 42, 43]
    assert (await second.remove_messages_before(room.id, cutoff, 100)).count == 0


async def test_removal_stops_at_the_oldest_kept_message(tmp_path: Path) -> None:
    """A message whose clock stepped back behind a kept one stays until the cut-off passes the
    kept one too (SQLite, where such a step can happen: ts is the writer's wall clock)."""
    store = SqliteStore(str(tmp_path / "chat.db"))
    await store.open()
    try:
        alice = await user(store, "alice")
        room = await store.create_room("general", "public", None)
        sent = await _send(store, room, alice, 3, "m")
        late = _ms(sent[-1]) + 60_000
        await store.run_in_writer(lambda c: c.execute(
            "UPDATE messages SET ts = ? WHERE room_id = ? AND seq = 2", (late, room.id)))
        assert (await store.remove_messages_before(room.id, late, 100)).count == 1
        assert [m.seq for m in await history(store, room)] == [2, 3]
        assert (await store.remove_messages_before(room.id, late + 1, 100)).count == 2
    finally:
        await store.close()


async def test_removed_messages_take_their_files_rows_with_them(store: Store) -> None:
    """A removed message's file row goes in the same call, which returns its id (for the
    caller to remove the bytes); a kept message's file and an unposted upload stay."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", None)

    def upload(name: str) -> NewFile:
        return NewFile(id=f"{name:0<32}", room_id=room.id, uploader_id=alice.id,
                       uploader="alice", name=name, size=1, content_type="text/plain",
                       sha256="ab" * 32)

    old_file, kept_file, unposted = (upload(n) for n in ("aa", "bb", "cc"))
    for file in (old_file, kept_file, unposted):
        await store.add_file(file)
    await store.append_message(new(room, alice, "old", file=await store.get_file(old_file.id)))
    await store.append_message(new(room, alice, "old too"))
    await asyncio.sleep(0.005)
    kept_posted = await store.get_file(kept_file.id)
    kept = await store.append_message(new(room, alice, "new", file=kept_posted))
    removed = await store.remove_messages_before(room.id, _ms(kept), 100)
    assert removed == RemovedMessages(2, (old_file.id,))
    assert await store.get_file(old_file.id) is None
    assert [await store.get_file(f.id) is not None for f in (kept_file, unposted)] == [True] * 2
    assert await store.remove_messages_before(room.id, _ms(kept), 100) == RemovedMessages()
