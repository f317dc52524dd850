"""Receiving an upload: `POST /api/rooms/{room}/files` (docs/protocol.md §10, "Files").

The multipart body is read part by part with aiohttp's streaming reader and the file's bytes
go to disk as they arrive, 1 MiB at a time through the thread pool (which also hashes them), so
an upload costs at most ~1 MiB of memory whatever its size and the loop never waits on a disk.
Over `[limits] max_file_bytes` the request stops with 413 and the partial file is removed; so
is every file whose request fails later on (bad form, store down): nothing is left on disk
that no row names.

Then, in order: a reply's root is checked (`thread`, chatserver.threads: a refusal keeps
nothing), the bytes are synced and renamed to their random id, the row is recorded, an
image's thumbnail job starts in the process pool (the upload waits for it up to
`THUMBNAIL_WAIT` so the message usually carries `thumbnail_url` at once; a slower job finishes
in the background, and when it made a thumbnail the room's members get a `file_updated`
frame), and the message is posted through the normal path (`MessageService.post_file`:
durable, then published).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from chatserver import files, protocol, threads
from chatserver.broker.base import Event
from chatserver.context import ChatContext
from chatserver.errors import BadRequest, TooLarge
from chatserver.store.base import NewFile, Room, StoredFile, StoredMessage, User
from workers.thumbnails import Thumbnail

log = logging.getLogger(__name__)

THUMBNAIL_WAIT: Final = 2.0  # seconds an upload waits for its thumbnail before posting
_CHUNK: Final = 64 * 1024  # read from the socket at a time
_SLICE: Final = 1024 * 1024  # written to disk at a time: the most an upload holds in memory
# Multipart framing around the file and the caption: boundaries and part headers.
_FORM_OVERHEAD: Final = 64 * 1024
_THREAD_BYTES: Final = 64  # read of a `thread` field at most (a seq has up to 16 digits)
_FIELDS = "'file', and optionally 'text' (a caption) and 'thread' (a root's seq)"
_MALFORMED = "the request body is not valid multipart/form-data"
# What aiohttp's multipart reader raises for a body it cannot parse.
_PARSE_ERRORS = (ValueError, LookupError, RuntimeError, BadHttpMessage)


@dataclass(eq=False, slots=True)
class _Form:
    """What the upload form has given so far."""

    spool: _Spool | None = None  # the file's bytes on their way to disk
    name: str = ""  # the file's name, cleaned
    caption: str | None = None
    thread: int | None = None  # a root's seq as given; checked once the body is read


async def receive(ctx: ChatContext, request: web.Request, room: Room, user: User
                  ) -> StoredMessage:
    """Store the request's file and post it to `room` as `user` (already allowed to post
    there); the stored message. `BadRequest`, `TooLarge` with the reason otherwise, and
    `NotFound` / `BadRequest` for a `thread` no reply may hang from."""
    limits = ctx.config.limits
    declared = request.content_length
    if declared is not None and declared > (
            limits.max_file_bytes + limits.max_message_bytes + _FORM_OVERHEAD):
        raise TooLarge(f"the upload is {declared} bytes; files may have at most "
                       f"{limits.max_file_bytes}")
    if request.content_type != "multipart/form-data":
        raise BadRequest(f"send the upload as multipart/form-data with the fields {_FIELDS}")
    root = files.directory(ctx)
    form = _Form()
    try:
        await _read_form(ctx, request, root, form)
        spool = form.spool
        if spool is None:
            raise BadRequest(f"the form has no 'file' field; the fields are {_FIELDS}")
        # The root is checked before the bytes are kept: a refused reply leaves nothing on
        # disk and takes no seq. (The thread's part may follow the file's, so not sooner.)
        thread = await threads.reply_root(ctx.store, room, form.thread)
        file_id = secrets.token_hex(16)
        sha256 = await spool.commit(files.file_path(root, file_id))
    except BaseException:
        if form.spool is not None:
            await asyncio.shield(form.spool.discard())
        raise
    image = files.sniff_image(spool.head) is not None
    new = NewFile(id=file_id, room_id=room.id, uploader_id=user.id, uploader=user.name,
                  name=form.name, size=spool.size, content_type=files.OCTET_STREAM,
                  sha256=sha256, thumbnail="pending" if image else "none")
    return await _record_and_post(ctx, root, room, user, new, form.caption, thread)


async def _read_form(ctx: ChatContext, request: web.Request, root: Path, form: _Form
                     ) -> None:
    """Read the body part by part into `form` (the file's bytes into a spool under `root`);
    `form` keeps what was read when this raises, so the caller can discard the spool."""
    limits = ctx.config.limits
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            if "Content-Encoding" in part.headers or (
                    "Content-Transfer-Encoding" in part.headers):
                raise BadRequest("encoded form parts are not accepted; send the raw bytes")
            field = part.name
            if field == "file":
                if form.spool is not None:
                    raise BadRequest("the form has two 'file' fields; send one per request")
                form.name = files.clean_name(_filename(part))
                form.spool = _Spool(ctx, root)
                await form.spool.open()
                await _copy(part, form.spool, limits.max_file_bytes)
            elif field == "text":
                form.caption = await _caption(part, limits.max_message_bytes)
            elif field == "thread":
                form.thread = await _thread(part)
            else:
                shown = (field or "")[:40]
                raise BadRequest(f"unknown form field {shown!r}; the fields are {_FIELDS}")
    except _PARSE_ERRORS:
        raise BadRequest(_MALFORMED) from None
    except ConnectionError:
        raise BadRequest("the upload was cut off before its end") from None


async def _record_and_post(ctx: ChatContext, root: Path, room: Room, user: User,
                           new: NewFile, caption: str | None, thread: int | None
                           ) -> StoredMessage:
    thumbnail: asyncio.Future[StoredFile] | None = None
    try:
        stored = await ctx.store.add_file(new)
        if stored.thumbnail == "pending":
            thumbnail = _start_thumbnail(ctx, root, stored)
            await asyncio.wait([thumbnail], timeout=THUMBNAIL_WAIT)
            if thumbnail.done():
                stored = thumbnail.result()
        message = await ctx.messages.post_file(room, user, caption, stored, thread=thread)
    except BaseException:
        await asyncio.shield(_forget(ctx, root, new.id, thumbnail))
        raise
    if thumbnail is not None and stored.thumbnail == "pending":
        # Posted without it, even if the job finished while the message was being stored.
        thumbnail.add_done_callback(lambda made: _announce_late(ctx, message, made))
    return message


def _announce_late(ctx: ChatContext, message: StoredMessage,
                   made: asyncio.Future[StoredFile]) -> None:
    """A thumbnail made after its message was posted: the file is now served as the image it
    is, with a thumbnail. Members who have the message are told; it is not a change to the
    room's log (no seq), so anyone who missed it reads the file as it is in history."""
    file = made.result()
    if file.thumbnail != "ready":  # failed, or the message was deleted meanwhile
        return
    frame = protocol.encode({"op": "file_updated", "room": message.room, "target": message.seq,
                             "file": protocol.file_body(file)})
    ctx.broker.publish(Event("file_updated", message.room, frame))


async def _forget(ctx: ChatContext, root: Path, file_id: str,
                  thumbnail: asyncio.Future[StoredFile] | None) -> None:
    """Undo a failed upload: its row (if recorded) and its bytes."""
    if thumbnail is not None:
        await asyncio.wait([thumbnail])  # so no thumbnail lands after we removed the rest
    try:
        await ctx.store.delete_file(file_id)
    except Exception as exc:  # the store is down: the unlinked row is invisible (404)
        log.warning("could not forget the failed upload %s: %r", file_id, exc)
    await ctx.executors.run_blocking(files.remove_from_disk, root, [file_id],
                                     job="remove_files")


def _start_thumbnail(ctx: ChatContext, root: Path, file: StoredFile
                     ) -> asyncio.Future[StoredFile]:
    """Run the thumbnail job as a background task (shutdown waits for it); the future gets
    the file as recorded after it, whatever the outcome."""
    outcome: asyncio.Future[StoredFile] = asyncio.get_running_loop().create_future()

    async def job() -> None:
        try:
            outcome.set_result(await _thumbnail(ctx, root, file))
        except Exception as exc:
            log.warning("thumbnail of file %s not recorded: %r", file.id, exc)
            outcome.set_result(file)
        finally:
            if not outcome.done():  # cancelled at shutdown
                outcome.set_result(file)

    task = asyncio.create_task(job(), name=f"thumbnail-{file.id}")
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)
    return outcome


async def _thumbnail(ctx: ChatContext, root: Path, file: StoredFile) -> StoredFile:
    try:
        made = await ctx.executors.make_thumbnail(str(files.file_path(root, file.id)),
                                                  str(files.thumbnail_path(root, file.id)))
    except Exception as exc:  # a crashed or closed pool: no thumbnail, served as a download
        log.warning("thumbnail job for file %s failed: %r", file.id, exc)
        made = Thumbnail(None, problem="the thumbnail job failed")
    if made.content_type is None or made.image_type is None:
        # Not decodable, or over the pixel cap: never shown inline (a browser would have to
        # decode it), only offered as a download.
        log.info("no thumbnail for file %s: %s", file.id, made.problem)
        return await ctx.store.set_file_thumbnail(file.id, "failed", None)
    return await ctx.store.set_file_thumbnail(file.id, "ready", made.content_type,
                                              made.image_type)


def _filename(part: BodyPartReader) -> str | None:
    try:
        return part.filename
    except (LookupError, UnicodeDecodeError, ValueError):  # a filename* we cannot decode
        return None


async def _copy(part: BodyPartReader, spool: _Spool, limit: int) -> None:
    while chunk := await part.read_chunk(_CHUNK):
        if spool.size + len(chunk) > limit:
            raise TooLarge(f"the file is over the limit of {limit} bytes")
        await spool.write(chunk)
    if not part.at_eof():
        raise BadRequest("the request body ended inside the file")


async def _read(part: BodyPartReader, limit: int) -> bytes:
    """A small field, or `TooLarge` past `limit` bytes (read no further)."""
    data = bytearray()
    while chunk := await part.read_chunk(8192):
        data += chunk
        if len(data) > limit:
            raise TooLarge(f"the form field {part.name!r} is over {limit} bytes")
    return bytes(data)


async def _thread(part: BodyPartReader) -> int | None:
    try:
        raw = await _read(part, _THREAD_BYTES)
    except TooLarge:  # no seq is that long: refused like any other value that is not one
        raise BadRequest(threads.THREAD_RULE) from None
    return threads.thread_form_field(raw)


async def _caption(part: BodyPartReader, max_bytes: int) -> str | None:
    try:
        text = (await _read(part, max_bytes)).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("'text' is not valid UTF-8") from None
    # A form's empty caption box sends an empty field: no caption, not a bad request.
    return protocol.check_text(text, max_bytes) if text else None


class _Spool:
    """An upload on its way to disk: a temporary file under `<dir>/tmp/`, written and hashed
    on the thread pool in slices of `_SLICE`, then synced and renamed to its final name."""

    def __init__(self, ctx: ChatContext, root: Path) -> None:
        self._executors = ctx.executors
        self._root = root
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._fd = -1
        self._path = ""
        self.size = 0
        self.head = b""  # the first bytes, to tell an image by

    async def open(self) -> None:
        self._fd, self._path = await self._executors.run_blocking(
            _open_temporary, self._root, job="upload_write")

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.size += len(chunk)
        if len(self._buffer) >= _SLICE:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = self._buffer, bytearray()
        if not self.head:
            self.head = bytes(data[:16])
        if data:
            await self._executors.run_blocking(self._write_sync, data, job="upload_write")

    def _write_sync(self, data: bytearray) -> None:
        self._hash.update(data)  # hashlib releases the GIL for large buffers
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    async def commit(self, final: Path) -> str:
        """Sync and move the bytes to `final`; the SHA-256 in hex."""
        await self._flush()
        await self._executors.run_blocking(_commit, self._fd, self._path, final,
                                           job="upload_write")
        self._fd, self._path = -1, ""
        return self._hash.hexdigest()

    async def discard(self) -> None:
        if self._path:
            await self._executors.run_blocking(_discard, self._fd, self._path,
                                               job="upload_write")
            self._fd, self._path = -1, ""


def _open_temporary(root: Path) -> tuple[int, str]:
    # Under the files directory, so the final rename stays on one file system (atomic).
    temporary = root / "tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix="upload-", dir=temporary)


def _commit(fd: int, path: str, final: Path) -> None:
    # Synced before the row that names it is committed: a message acknowledged as durable
    # never points at bytes a crash could lose.
    os.fsync(fd)
    os.close(fd)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _discard(fd: int, path: str) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:  # already closed by a commit that failed after closing it
            pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
