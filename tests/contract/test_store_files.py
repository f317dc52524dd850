"""Store contract: the files table (uploads) and how messages carry their file, every backend."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from chatserver.errors import Conflict, NotFound
from chatserver.store.base import NewFile, Room, Store, User

from .conftest import StoreFactory
from .test_store import TS, new, user


def upload(room: Room, uploader: User, *, name: str = "photo.png", image: bool = True
           ) -> NewFile:
    return NewFile(id=secrets.token_hex(16), room_id=room.id, uploader_id=uploader.id,
                   uploader=uploader.name, name=name, size=1234,
                   content_type="application/octet-stream", sha256="ab" * 32,
                   thumbnail="pending" if image else "none")


async def _room(store: Store) -> tuple[Room, User]:
    alice = await user(store, "alice")
    return await store.create_room("general", "public", alice.id), alice


async def test_added_file_is_found_by_id_unposted_with_its_metadata(store: Store) -> None:
    """An added file reads back with every field, its room's name, a timestamp, no seq."""
    room, alice = await _room(store)
    file = upload(room, alice, name="résumé final.pdf", image=False)
    stored = await store.add_file(file)
    assert stored == await store.get_file(file.id)
    assert (stored.id, stored.room_id, stored.room, stored.uploader) == (
        file.id, room.id, "general", "alice")
    assert (stored.name, stored.size, stored.sha256) == ("résumé final.pdf", 1234, "ab" * 32)
    assert stored.content_type == "application/octet-stream"
    assert (stored.thumbnail, stored.thumbnail_type, stored.seq) == ("none", None, None)
    assert TS.match(stored.created_at)
    assert await store.get_file(secrets.token_hex(16)) is None


async def test_file_of_unknown_room_is_not_found_and_a_taken_id_conflicts(store: Store) -> None:
    """Adding a file to a room that does not exist is NotFound; reusing an id is Conflict."""
    room, alice = await _room(store)
    file = upload(room, alice)
    await store.add_file(file)
    with pytest.raises(Conflict):
        await store.add_file(file)
    with pytest.raises(NotFound):
        await store.add_file(dataclasses.replace(upload(room, alice), room_id=room.id + 999))


async def test_thumbnail_outcome_is_recorded_with_the_type_the_bytes_have(store: Store) -> None:
    """set_file_thumbnail records ready with the thumbnail's and the file's types, or failed
    keeping the type; an unknown id is NotFound."""
    room, alice = await _room(store)
    ok, bad = upload(room, alice), upload(room, alice)
    await store.add_file(ok)
    await store.add_file(bad)
    ready = await store.set_file_thumbnail(ok.id, "ready", "image/png", "image/png")
    assert (ready.thumbnail, ready.thumbnail_type, ready.content_type) == (
        "ready", "image/png", "image/png")
    assert await store.get_file(ok.id) == ready
    failed = await store.set_file_thumbnail(bad.id, "failed", None)
    assert (failed.thumbnail, failed.content_type) == ("failed", "application/octet-stream")
    with pytest.raises(NotFound):
        await store.set_file_thumbnail(secrets.token_hex(16), "failed", None)


async def test_message_posting_a_file_carries_it_live_and_in_history(store: Store) -> None:
    """append_message links the file to the message's seq; the appended message and both
    history reads carry the same file, and messages without one carry none."""
    room, alice = await _room(store)
    before = await store.append_message(new(room, alice, "before"))
    file = await store.add_file(upload(room, alice))
    posted = await store.append_message(new(room, alice, "look", file=file))
    after = await store.append_message(new(room, alice, "after"))
    assert posted.file is not None and posted.file.seq == posted.seq
    assert posted.file == await store.get_file(file.id)
    assert before.file is None and after.file is None
    for page in (await store.messages_after(room.id, 0, 10),
                 await store.messages_before(room.id, None, 10)):
        assert page == [before, posted, after]
    assert await store.messages_after(room.id, posted.seq, 10) == [after]


async def test_history_shows_a_files_current_thumbnail_state(store: Store) -> None:
    """A thumbnail recorded after the message was posted shows in history from then on."""
    room, alice = await _room(store)
    file = await store.add_file(upload(room, alice))
    posted = await store.append_message(new(room, alice, "pic", file=file))
    ready = await store.set_file_thumbnail(file.id, "ready", "image/jpeg", "image/jpeg")
    [message] = await store.messages_after(room.id, 0, 10)
    assert message.file == ready
    assert dataclasses.replace(message, file=posted.file) == posted


async def test_deleted_file_is_gone_and_deleting_is_idempotent(store: Store) -> None:
    """delete_file forgets the row; a second delete is harmless."""
    room, alice = await _room(store)
    file = upload(room, alice)
    await store.add_file(file)
    await store.delete_file(file.id)
    await store.delete_file(file.id)
    assert await store.get_file(file.id) is None


async def test_files_survive_a_reopen(make_store: StoreFactory) -> None:
    """Files and their links are durable: a fresh store on the same storage reads them."""
    first = make_store()
    await first.open()
    room, alice = await _room(first)
    file = await first.add_file(upload(room, alice))
    posted = await first.append_message(new(room, alice, "kept", file=file))
    await first.close()
    second = make_store()
    await second.open()
    assert await second.messages_after(room.id, 0, 10) == [posted]
    await second.close()
