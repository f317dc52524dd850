"""The PostgreSQL store's files table (migration 0004): SQL and row mapping.

Each write is one statement (atomic on its own), run by `PostgresStore._write`. The link from
a file to the message that posts it is made by the append batch's own statement
(`LINK_FILES_CTE` in postgres_writer), so a message and its file commit together;
`attach_files` gives a history page its files on the connection that read the page.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from chatserver.store.base import StoredFile, StoredMessage, ThumbnailState, format_ts

FILE_COLUMNS = (
    "f.id, f.room_id, r.name, f.uploader_name, f.name, f.size, f.content_type, f.sha256,"
    " f.created_at, f.thumbnail, f.thumbnail_type, f.seq"
)
SELECT_FILE = f"SELECT {FILE_COLUMNS} FROM files f JOIN rooms r ON r.id = f.room_id"

# $1..$10 as NewFile's fields plus created_at; returns the row like SELECT_FILE.
INSERT_FILE = (
    "WITH f AS ("
    "  INSERT INTO files (id, room_id, uploader_id, uploader_name, name, size, content_type,"
    "                     sha256, created_at, thumbnail)"
    "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *"
    f") SELECT {FILE_COLUMNS} FROM f JOIN rooms r ON r.id = f.room_id"
)
UPDATE_THUMBNAIL = (
    "WITH f AS ("
    "  UPDATE files SET thumbnail = $2, thumbnail_type = $3,"
    "                   content_type = coalesce($4, content_type)"
    "  WHERE id = $1 RETURNING *"
    f") SELECT {FILE_COLUMNS} FROM f JOIN rooms r ON r.id = f.room_id"
)
DELETE_FILE = "DELETE FROM files WHERE id = $1"
FILES_OF_PAGE = f"{SELECT_FILE} WHERE f.room_id = $1 AND f.seq BETWEEN $2 AND $3"


def file_from_row(row: Any) -> StoredFile:
    return StoredFile(
        id=row[0], room_id=row[1], room=row[2], uploader=row[3], name=row[4], size=row[5],
        content_type=row[6], sha256=row[7], created_at=format_ts(row[8]),
        thumbnail=cast(ThumbnailState, row[9]), thumbnail_type=row[10], seq=row[11],
    )


def posted(file: StoredFile | None, seq: int) -> StoredFile | None:
    """The file as the append batch linked it to the message `seq`."""
    return None if file is None else dataclasses.replace(file, seq=seq)


async def attach_files(conn: Any, room_id: int, messages: list[StoredMessage]
                       ) -> list[StoredMessage]:
    """`messages` (one room's) with the files they posted attached: one indexed range query."""
    if not messages:
        return messages
    seqs = [m.seq for m in messages]
    rows = await conn.fetch(FILES_OF_PAGE, room_id, min(seqs), max(seqs))
    if not rows:
        return messages
    files = {row[11]: file_from_row(row) for row in rows}
    return [dataclasses.replace(m, file=files[m.seq]) if m.seq in files else m
            for m in messages]
