"""The Store contract for mentions and read positions (docs/protocol.md §10): every backend in
`conftest.BACKENDS` stores a message's mentions with it, keeps one forward-only read position
per user and room, and counts unread messages and mentions for all of a user's rooms at once,
bounded per room."""

from __future__ import annotations

import asyncio
import time

import pytest

from chatserver.errors import NotFound
from chatserver.store.base import READ_WINDOW, Mention, ReadState, Room, Store, User

from .test_store import new, user


async def _post(store: Store, room: Room, author: User, text: str, *mentioned: User,
                everyone: bool = False) -> int:
    message = new(room, author, text, mentions=tuple(Mention(u.id, u.name) for u in mentioned),
                  mentions_room=everyone)
    return (await store.append_message(message)).seq


async def test_mentions_are_stored_with_the_message_and_read_back_alike(store: Store) -> None:
    """append_message returns the mentioned names and @room, and both history reads give the
    same back; a message without mentions has none."""
    alice, bob, carol = [await user(store, n) for n in ("alice", "bob", "carol")]
    room = await store.create_room("general", "public", None)
    stored = await store.append_message(new(
        room, alice, "@carol @bob @room",
        mentions=(Mention(bob.id, "bob"), Mention(carol.id, "carol")), mentions_room=True))
    plain = await store.append_message(new(room, alice, "hi"))
    assert (stored.mentions, stored.mentions_room) == (("bob", "carol"), True)
    assert (plain.mentions, plain.mentions_room) == ((), False)
    for page in (await store.messages_after(room.id, 0, 10),
                 await store.messages_before(room.id, None, 10)):
        assert [(m.mentions, m.mentions_room) for m in page] == [
            (("bob", "carol"), True), ((), False)]


async def test_user_ids_finds_existing_names_only(store: Store) -> None:
    """user_ids maps the names of existing users (disabled ones too) to ids, leaving the
    rest out."""
    alice = await user(store, "alice")
    bob = await user(store, "bob")
    await store.set_disabled("bob", True)
    assert await store.user_ids(["alice", "bob", "nobody"]) == {"alice": alice.id, "bob": bob.id}
    assert await store.user_ids([]) == {}


async def test_read_position_only_moves_forward_and_is_clamped(store: Store) -> None:
    """set_read raises the position, ignores a lower one, clamps to the latest seq, reports
    whether it moved, and is NotFound for an unknown room."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    assert await store.set_read(alice.id, room.id, 5) == (0, False)  # empty room: clamped to 0
    for i in range(3):
        await _post(store, room, alice, f"m{i}")
    assert await store.set_read(alice.id, room.id, 2) == (2, True)
    assert await store.set_read(alice.id, room.id, 1) == (2, False)
    assert await store.set_read(alice.id, room.id, 2) == (2, False)
    assert await store.set_read(alice.id, room.id, 99) == (3, True)
    assert (await store.read_states(alice.id))[room.id].seq == 3
    with pytest.raises(NotFound):
        await store.set_read(alice.id, room.id + 1000, 1)


async def test_read_states_count_others_messages_and_mentions_after_the_position(
        store: Store) -> None:
    """Unread counts others' messages after the read position; mentions those of them that
    mention the user or @room; own messages never count; a public room the user is not a
    member of, and a private room they cannot read, show nothing."""
    alice, bob, carol = [await user(store, n) for n in ("alice", "bob", "carol")]
    general = await store.create_room("general", "public", alice.id)
    await store.add_member(general.id, bob.id)
    ops = await store.create_room("ops", "private", bob.id)
    lobby = await store.create_room("lobby", "public", bob.id)
    await _post(store, general, bob, "hi")
    await _post(store, general, bob, "@alice look", alice)
    await _post(store, general, alice, "@room mine", everyone=True)
    await _post(store, general, bob, "@room and @alice", alice, everyone=True)
    await _post(store, ops, bob, "@carol is not here", carol)
    await _post(store, lobby, bob, "@alice in a room she never joined", alice)
    states = await store.read_states(alice.id)
    assert states[general.id] == ReadState(seq=0, unread=3, mentions=2, counted_seq=4)
    assert states[lobby.id] == ReadState(counted_seq=1)  # visible, not followed
    assert ops.id not in states
    assert ops.id not in await store.read_states(carol.id)
    assert (await store.read_states(bob.id))[general.id] == ReadState(
        unread=1, mentions=1, counted_seq=4)
    await store.set_read(alice.id, general.id, 2)
    assert (await store.read_states(alice.id))[general.id] == ReadState(2, 1, 1, counted_seq=4)
    await store.set_read(alice.id, general.id, 4)
    assert (await store.read_states(alice.id))[general.id] == ReadState(4, 0, 0, counted_seq=4)


async def test_deleted_messages_are_not_unread(store: Store) -> None:
    """A deleted message counts neither as unread nor as a mention, and history no longer
    shows what it mentioned."""
    alice, bob = await user(store, "alice"), await user(store, "bob")
    room = await store.create_room("general", "public", alice.id)
    await store.add_member(room.id, bob.id)
    seq = await _post(store, room, bob, "@alice secret", alice)
    await _post(store, room, bob, "@alice kept", alice)
    await store.delete_message(room.id, seq, bob)
    # counted_seq 3: the deletion took a seq.
    assert (await store.read_states(alice.id))[room.id] == ReadState(0, 1, 1, counted_seq=3)
    page = await store.messages_after(room.id, 0, 10)
    assert [m.mentions for m in page if m.seq == seq] == [()]


async def test_counts_stop_at_the_window_and_say_so(store: Store) -> None:
    """Past READ_WINDOW messages after the position, unread stops at the window and the state
    is capped; mentions are counted from the mention index, not the window."""
    alice, bob = await user(store, "alice"), await user(store, "bob")
    room = await store.create_room("general", "public", alice.id)
    await asyncio.gather(*(_post(store, room, bob, f"m{i}") for i in range(READ_WINDOW + 5)))
    await _post(store, room, bob, "@alice at the end", alice)
    state = (await store.read_states(alice.id))[room.id]
    assert state == ReadState(seq=0, unread=READ_WINDOW, mentions=1, capped=True,
                             counted_seq=READ_WINDOW + 6)
    await store.set_read(alice.id, room.id, 10)
    assert (await store.read_states(alice.id))[room.id].capped is False


async def test_retention_removes_a_message_with_its_mentions(store: Store) -> None:
    """Removing an old message removes its mentions with it: no longer counted."""
    alice, bob = await user(store, "alice"), await user(store, "bob")
    room = await store.create_room("general", "public", alice.id)
    await _post(store, room, bob, "@alice old", alice, everyone=True)
    removed = await store.remove_messages_before(room.id, time.time_ns() // 10**6 + 1000, 10)
    assert removed.count == 1
    assert (await store.read_states(alice.id))[room.id] == ReadState(counted_seq=1)
