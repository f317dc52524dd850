"""The SQLite store's files table (migration 0004): statements run on the store's connections.

Writes run as writer-thread jobs (in the batch transaction, in their own savepoint); reads on
a reader connection. `link_file` runs inside `append_message`'s job, so a message and the link
to its file commit together; `with_files` runs inside the history read's job, so a page of
messages gets its files in the same thread hop.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any, cast

from chatserver.errors import Conflict, NotFound
from chatserver.store.base import (
    NewFile,
    StoredFile,
    StoredMessage,
    ThumbnailState,
    format_ts,
)

FILE_COLUMNS = (
    "f.id, f.room_id, r.name, f.uploader_name, f.name, f.size, f.content_type, f.sha256,"
    " f.created_at, f.thumbnail, f.thumbnail_type, f.seq"
)
SELECT_FILE = f"SELECT {FILE_COLUMNS} FROM files f JOIN rooms r ON r.id = f.room_id"


def file_from_row(row: sqlite3.Row | tuple[Any, ...]) -> StoredFile:
    return StoredFile(
        id=row[0], room_id=row[1], room=row[2], uploader=row[3], name=row[4], size=row[5],
        content_type=row[6], sha256=row[7], created_at=format_ts(row[8]),
        thumbnail=cast(ThumbnailState, row[9]), thumbnail_type=row[10], seq=row[11],
    )


def _one(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    rows = conn.execute(sql, params).fetchall()  # stepped to the end: no statement left open
    return rows[0] if rows else None


def insert_file(conn: sqlite3.Connection, file: NewFile) -> StoredFile:
    try:
        conn.execute(
            "INSERT INTO files (id, room_id, uploader_id, uploader_name, name, size,"
            " content_type, sha256, created_at, thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (file.id, file.room_id, file.uploader_id, file.uploader, file.name, file.size,
             file.content_type, file.sha256, time.time_ns() // 1_000_000, file.thumbnail),
        )
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
            raise NotFound("no such room or user") from None
        if exc.sqlite_errorcode in (sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY,
                                    sqlite3.SQLITE_CONSTRAINT_UNIQUE):
            raise Conflict("that file id is taken") from None
        raise
    return file_from_row(_one(conn, f"{SELECT_FILE} WHERE f.id = ?", (file.id,)))


def read_file(conn: sqlite3.Connection, file_id: str) -> StoredFile | None:
    row = _one(conn, f"{SELECT_FILE} WHERE f.id = ?", (file_id,))
    return file_from_row(row) if row else None


def update_thumbnail(conn: sqlite3.Connection, file_id: str, state: ThumbnailState,
                     thumbnail_type: str | None, content_type: str | None) -> StoredFile:
    cur = conn.execute(
        "UPDATE files SET thumbnail = ?, thumbnail_type = ?,"
        " content_type = coalesce(?, content_type) WHERE id = ?",
        (state, thumbnail_type, content_type, file_id),
    )
    if cur.rowcount == 0:
        raise NotFound("no such file")
    return file_from_row(_one(conn, f"{SELECT_FILE} WHERE f.id = ?", (file_id,)))


def remove_file(conn: sqlite3.Connection, file_id: str) -> None:
    conn.execute("DELETE FROM files WHERE id = ?", (file_id,))


def link_file(conn: sqlite3.Connection, file: StoredFile | None, room_id: int, seq: int
              ) -> StoredFile | None:
    """Mark `file` as posted by the message (room_id, seq), in that message's transaction.

    Raises `NotFound` (rolling the message back with its savepoint, seq included) when the
    file is not this room's or was already posted: one upload, one message."""
    if file is None:
        return None
    cur = conn.execute(
        "UPDATE files SET seq = ? WHERE id = ? AND room_id = ? AND seq IS NULL",
        (seq, file.id, room_id),
    )
    if cur.rowcount == 0:
        raise NotFound("no such file in this room waiting to be posted")
    return dataclasses.replace(file, seq=seq)


def with_files(conn: sqlite3.Connection, room_id: int, messages: list[StoredMessage]
               ) -> list[StoredMessage]:
    """`messages` (one room's) with the files they posted attached."""
    if not messages:
        return messages
    seqs = [m.seq for m in messages]
    rows = conn.execute(
        f"{SELECT_FILE} WHERE f.room_id = ? AND f.seq BETWEEN ? AND ?",
        (room_id, min(seqs), max(seqs)),
    ).fetchall()
    if not rows:
        return messages
    files = {row[11]: file_from_row(row) for row in rows}
    return [dataclasses.replace(m, file=files[m.seq]) if m.seq in files else m
            for m in messages]
