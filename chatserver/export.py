"""`chatserver export ROOM`: a room's messages as JSON lines, in seq order, streamed.

Each line is a message exactly as `history` gives it (`protocol.message_body`), so whatever a
feature adds to stored messages appears in exports without a change here. Memory stays
constant whatever the room's size: the store is read `PAGE_SIZE` messages at a time and each
page is written before the next is read. Every file operation runs in a thread, so the event
loop (the CLI's own) never waits on a slow disk or a full pipe.

The export covers the room up to its latest seq when it starts: messages sent meanwhile are
left for the next export, so it always ends. Messages removed by retention meanwhile may be
missing, as they would be from a later export.

`--output FILE` is atomic: the lines go to `FILE.partial`, which is synced and renamed over
FILE only once complete, and removed on any failure (FILE, if it existed, is left as it was).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import BinaryIO

import orjson

from chatserver.protocol import message_body
from chatserver.store.base import Room, Store, StoredMessage

PAGE_SIZE = 500  # messages per store read and per write: ~0.5 MB for typical messages

Write = Callable[[bytes], Awaitable[object]]


def encode_line(message: StoredMessage) -> bytes:
    """One message as a JSON line: the `history` item, newline-terminated."""
    return orjson.dumps(message_body(message), option=orjson.OPT_APPEND_NEWLINE)


async def export_room(store: Store, room: Room, write: Write) -> int:
    """Pass every message of `room` up to its latest seq to `write`, one page of JSON lines at
    a time, in seq order; return how many messages were written."""
    end = await store.latest_seq(room.id)
    after = count = 0
    while after < end:
        page = [m for m in await store.messages_after(room.id, after, PAGE_SIZE) if m.seq <= end]
        if not page:
            break
        await write(b"".join(encode_line(message) for message in page))
        after = page[-1].seq
        count += len(page)
    return count


async def export_to_stdout(store: Store, room: Room) -> int:
    out = sys.stdout.buffer
    await asyncio.to_thread(sys.stdout.flush)  # anything printed before stays in front

    async def write(chunk: bytes) -> None:
        await asyncio.to_thread(_write_flushed, out, chunk)

    return await export_room(store, room, write)


async def export_to_file(store: Store, room: Room, path: str) -> int:
    """Export into `path` atomically (see the module docstring)."""
    partial = path + ".partial"
    # "wb", not "xb": a .partial left by a crashed export is ours to overwrite.
    file = await asyncio.to_thread(open, partial, "wb")
    try:
        try:
            count = await export_room(store, room, lambda chunk: asyncio.to_thread(
                file.write, chunk))
            await asyncio.to_thread(_sync, file)
        finally:
            await asyncio.to_thread(file.close)
        await asyncio.to_thread(os.replace, partial, path)
    except BaseException:
        await asyncio.to_thread(_remove, partial)
        raise
    return count


def _write_flushed(out: BinaryIO, chunk: bytes) -> None:
    out.write(chunk)
    out.flush()


def _sync(file: BinaryIO) -> None:
    # Durable before the rename, so FILE is never an empty or torn file after a power loss.
    file.flush()
    os.fsync(file.fileno())


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


__all__ = ["PAGE_SIZE", "encode_line", "export_room", "export_to_file", "export_to_stdout"]
