"""Files on disk and how they are served (docs/protocol.md §10, "Files").

The bytes of an upload live under `[files] dir` at `<dir>/<id[:2]>/<id>` (its thumbnail beside
it as `<id>.thumb`), named by the file's random id and never by the client's name, which is
metadata only: cleaned here, and quoted only into a Content-Disposition header. Receiving an
upload is chatserver.uploads; this module names, sniffs and serves.

Serving is safe for any bytes: a file is `inline` only when its bytes are a PNG, JPEG, GIF or
WebP image that the thumbnail job decoded (its content type is recorded then, from the bytes,
never from the upload's claim); everything else, images until their job has run included, is an
`attachment` of type application/octet-stream. The message's `file.content_type` is always the
type the file is served with. Every
answer carries `X-Content-Type-Options: nosniff` (the browser never guesses HTML into it) and
`Content-Security-Policy: sandbox` (even if something did render it as a document, it would
run no script and have no origin). Someone who may not read the file's room gets 404, as for
an id that does not exist, so ids leak nothing.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Final
from urllib.parse import quote

from aiohttp import web

from chatserver.context import ChatContext
from chatserver.errors import Forbidden, NotFound
from chatserver.store.base import StoredFile, User

FILE_ID: Final = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16)
OCTET_STREAM: Final = "application/octet-stream"
INLINE_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
MAX_NAME_BYTES: Final = 255  # what most file systems take, so a download keeps its name
_KEPT_EXTENSION_BYTES = 16  # a name cut to fit keeps an extension up to this long
_NOT_FOUND = "no such file"

# Answers for every file: see the module docstring for why each one.
SAFE_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    # Files never change; private, because only some users may read them.
    "Cache-Control": "private, max-age=86400",
}


def directory(ctx: ChatContext) -> Path:
    """`[files] dir`, absolute: the pool's worker processes open paths under it too."""
    return Path(ctx.config.files.dir).absolute()


def file_path(root: Path, file_id: str) -> Path:
    # Two hex digits of fan-out: 256 directories keep each one small at millions of files.
    return root / file_id[:2] / file_id


def thumbnail_path(root: Path, file_id: str) -> Path:
    return root / file_id[:2] / f"{file_id}.thumb"


def sniff_image(head: bytes) -> str | None:
    """The image type the first bytes of a file announce (PNG, JPEG, GIF, WebP), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def clean_name(raw: str | None) -> str:
    """The client's file name made fit to show and to put in a header: its last path
    component, NFC, no control or format characters (a right-to-left override would make
    `gpj.exe` look like `exe.jpg`), whitespace collapsed, at most 255 UTF-8 bytes (keeping a
    short extension); "file" when nothing is left."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    kept: list[str] = []
    for char in name:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            kept.append(" ")
        elif category not in ("Cf", "Cs", "Co", "Cn"):
            kept.append(char)
    name = " ".join("".join(kept).split())
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, extension = name.rpartition(".")
        size = len(extension.encode("utf-8"))
        if dot and stem and size <= _KEPT_EXTENSION_BYTES:
            name = _cut(stem, MAX_NAME_BYTES - size - 1).rstrip() + "." + extension
        else:
            name = _cut(name, MAX_NAME_BYTES).rstrip()
    return name if name not in ("", ".", "..") else "file"


def _cut(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def content_disposition(kind: str, name: str) -> str:
    """`inline` or `attachment` with the name twice: an ASCII fallback for old clients and
    the exact name in RFC 6266's `filename*`."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def _readable_file(ctx: ChatContext, file_id: str, user: User) -> StoredFile:
    """The posted file, if `user` may read its room; `NotFound` otherwise, whatever the
    reason (unknown id, not yet posted, another room's)."""
    if not FILE_ID.fullmatch(file_id):
        raise NotFound(_NOT_FOUND)
    file = await ctx.store.get_file(file_id)
    if file is None or file.seq is None:
        raise NotFound(_NOT_FOUND)
    try:
        await ctx.rooms.readable(file.room, user)
    except (Forbidden, NotFound):
        raise NotFound(_NOT_FOUND) from None
    return file


async def serve(ctx: ChatContext, file_id: str, user: User, *, thumbnail: bool
                ) -> web.StreamResponse:
    """`GET /api/files/{id}` and `/api/files/{id}/thumbnail`: streamed from disk
    (sendfile, ranges and conditional requests by aiohttp's FileResponse)."""
    file = await _readable_file(ctx, file_id, user)
    root = directory(ctx)
    if thumbnail:
        if file.thumbnail != "ready" or file.thumbnail_type is None:
            raise NotFound("this file has no thumbnail")
        path, content_type, inline = thumbnail_path(root, file.id), file.thumbnail_type, True
    else:
        path, content_type = file_path(root, file.id), file.content_type
        inline = content_type in INLINE_TYPES
    headers = {
        **SAFE_HEADERS,
        "Content-Type": content_type,
        "Content-Disposition": content_disposition("inline" if inline else "attachment",
                                                   file.name),
    }
    return web.FileResponse(path, headers=headers)


def remove_from_disk(root: Path, file_ids: Iterable[str]) -> None:
    """Delete the files' bytes and thumbnails (blocking: run it on the thread pool). For
    whatever forgets files: a failed upload, and retention or deletion of their messages."""
    for file_id in file_ids:
        for path in (file_path(root, file_id), thumbnail_path(root, file_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
