"""Files (docs/protocol.md §10): upload, the message that carries the file, safe serving,
thumbnails made in the pool, limits and refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from chatserver import uploads
from chatserver.config import FilesConfig

from .conftest import Chat, make_config, serve

LIMIT = 64 * 1024


@pytest.fixture
async def chat(tmp_path: Path, aiohttp_client: Any) -> Chat:
    config = dataclasses.replace(make_config(tmp_path, max_file_bytes=LIMIT),
                                 files=FilesConfig(dir=str(tmp_path / "files")))
    return await serve(aiohttp_client, config)


def form(data: bytes, name: str = "notes.txt", text: str | None = None,
         content_type: str = "text/plain", thread: str | None = None) -> aiohttp.FormData:
    body = aiohttp.FormData()
    if text is not None:
        body.add_field("text", text)
    body.add_field("file", data, filename=name, content_type=content_type)
    if thread is not None:  # after the file: the root can only be checked once it is read
        body.add_field("thread", thread)
    return body


def png(width: int = 640, height: int = 480) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def png_bomb(side: int = 100_000) -> bytes:
    """A valid PNG header claiming side x side pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def stored_files(chat: Chat) -> list[Path]:
    root = Path(chat.ctx.config.files.dir)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def post(chat: Chat, token: str, room: str, body: Any, **headers: str
               ) -> aiohttp.ClientResponse:
    return await chat.client.post(f"/api/rooms/{room}/files", data=body,
                                  headers={**chat.auth(token), **headers})


async def test_upload_posts_a_message_live_and_in_history_and_downloads_the_bytes(
        chat: Chat) -> None:
    """An upload answers 201 with the message; a joined client gets the same frame live,
    history has it too, and the download is the same bytes, as an attachment."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    ws = await chat.ws(bob)
    await ws.join("general")
    data = b"meeting notes\n" * 100
    response = await post(chat, alice, "general", form(data, "notes.txt", text="see **this**"))
    assert response.status == 201, await response.text()
    body = await response.json()
    live = await ws.recv_op("message")
    assert live == body
    assert body["text"] == "see **this**" and "<strong>this</strong>" in body["html"]
    file = body["file"]
    assert file["name"] == "notes.txt" and file["size"] == len(data)
    assert file["content_type"] == "application/octet-stream"
    assert file["url"] == f"/api/files/{file['id']}" and "thumbnail_url" not in file
    history = await chat.client.get("/api/rooms/general/messages", headers=chat.auth(bob))
    assert (await history.json())["messages"] == [body]
    download = await chat.client.get(file["url"], headers=chat.auth(bob))
    assert download.status == 200 and await download.read() == data
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Security-Policy"] == "sandbox"
    # On disk under its random id, never under the client's name.
    assert [p.name for p in stored_files(chat)] == [file["id"]]
    await ws.close()


async def test_html_file_is_only_ever_an_attachment_named_safely(chat: Chat) -> None:
    """An HTML upload claiming text/html is served as an octet-stream attachment with nosniff,
    and a hostile file name is cleaned for display and quoted for the header."""
    alice = await chat.user("alice")
    await chat.room("general")
    page = b"<html><script>alert(document.cookie)</script></html>"
    # As a browser sends it: the name raw UTF-8; here a path and a right-to-left override.
    name = "/home/me/ré\u202esumé.html".encode()
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name
            + b"\"\r\nContent-Type: text/html\r\n\r\n" + page + b"\r\n--xyz--\r\n")
    response = await post(chat, alice, "general", body,
                          **{"Content-Type": "multipart/form-data; boundary=xyz"})
    assert response.status == 201
    file = (await response.json())["file"]
    assert file["name"] == "résumé.html"
    download = await chat.client.get(file["url"], headers=chat.auth(alice))
    assert await download.read() == page
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"] == (
        "attachment; filename=\"r_sum_.html\"; filename*=UTF-8''r%C3%A9sum%C3%A9.html")
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Security-Policy"] == "sandbox"


async def test_png_gets_a_thumbnail_and_is_served_inline(chat: Chat) -> None:
    """A PNG (whatever type the upload claims) is served inline as image/png, with a
    thumbnail of at most 320x320 made in the process pool; the name is the caption."""
    alice = await chat.user("alice")
    await chat.room("general")
    data = png(640, 480)
    response = await post(chat, alice, "general",
                          form(data, "red_square_.png", content_type="text/html"))
    assert response.status == 201
    body = await response.json()
    assert body["text"] == "red_square_.png" and body["html"] == "<p>red_square_.png</p>"
    file = body["file"]
    assert file["content_type"] == "image/png"
    assert file["thumbnail_url"] == f"/api/files/{file['id']}/thumbnail"
    original = await chat.client.get(file["url"], headers=chat.auth(alice))
    assert original.headers["Content-Type"] == "image/png"
    assert original.headers["Content-Disposition"].startswith("inline;")
    assert await original.read() == data
    thumb = await chat.client.get(file["thumbnail_url"], headers=chat.auth(alice))
    assert thumb.status == 200 and thumb.headers["X-Content-Type-Options"] == "nosniff"
    image = Image.open(io.BytesIO(await thumb.read()))
    assert image.size == (320, 240) and image.format == "PNG"
    assert chat.ctx.executors.stats["thumbnail"].done == 1


async def test_a_late_thumbnail_reaches_the_members_as_file_updated(
        chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload that does not wait for its thumbnail posts the file as a download; once the
    pool has made the thumbnail, members get `file_updated` with the file as history now
    has it (an image, with its thumbnail). Not a room event: no seq, and a resume from
    before the message has the file as it is now."""
    monkeypatch.setattr(uploads, "THUMBNAIL_WAIT", 0.0)
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    ws = await chat.ws(bob)
    await ws.join("general")
    response = await post(chat, alice, "general", form(png(), "late.png"))
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["file"]["content_type"] == "application/octet-stream"
    assert "thumbnail_url" not in body["file"]
    assert await ws.recv_op("message") == body
    updated = await ws.recv_op("file_updated")
    file = {**body["file"], "content_type": "image/png",
            "thumbnail_url": f"/api/files/{body['file']['id']}/thumbnail"}
    assert updated == {"op": "file_updated", "room": "general", "target": body["seq"],
                       "file": file}
    history = await chat.client.get("/api/rooms/general/messages", headers=chat.auth(bob))
    assert (await history.json())["messages"][0]["file"] == file
    late = await chat.ws(bob)
    await late.send({"op": "join", "room": "general", "after": 0})  # replayed before joined
    replayed = await late.recv_op("message")
    assert replayed["seq"] == body["seq"] and replayed["file"] == file
    await ws.close()
    await late.close()


async def test_a_file_that_is_no_image_gets_no_file_updated(
        chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file claimed to be an image that does not decode stays a download: no frame."""
    monkeypatch.setattr(uploads, "THUMBNAIL_WAIT", 0.0)
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    ws = await chat.ws(bob)
    await ws.join("general")
    broken = png()[:200]
    response = await post(chat, alice, "general",
                          form(broken, "broken.png", content_type="image/png"))
    assert response.status == 201
    await ws.recv_op("message")
    deadline = time.monotonic() + 10
    while chat.ctx.executors.stats["thumbnail"].done < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert chat.ctx.executors.stats["thumbnail"].done == 1
    sender = await chat.ws(alice)
    await sender.join("general")
    await sender.say("general", "after")  # after the job's outcome, so after any frame of it
    seen = [await ws.recv()]
    while not (seen[-1]["op"] == "message" and seen[-1]["text"] == "after"):
        seen.append(await ws.recv())
    assert "file_updated" not in [frame["op"] for frame in seen], seen
    await ws.close()
    await sender.close()


async def test_decompression_bomb_header_is_refused_quickly(chat: Chat) -> None:
    """A tiny PNG claiming 100,000 x 100,000 pixels gets no thumbnail, at once, and is served
    only as a download."""
    alice = await chat.user("alice")
    await chat.room("general")
    started = time.monotonic()
    response = await post(chat, alice, "general", form(png_bomb(), "bomb.png"))
    assert response.status == 201
    assert time.monotonic() - started < 2.0
    file = (await response.json())["file"]
    assert "thumbnail_url" not in file and file["content_type"] == "application/octet-stream"
    thumb = await chat.client.get(f"{file['url']}/thumbnail", headers=chat.auth(alice))
    assert thumb.status == 404
    download = await chat.client.get(file["url"], headers=chat.auth(alice))
    assert download.headers["Content-Disposition"].startswith("attachment;")


async def test_file_over_the_limit_is_413_and_leaves_nothing_on_disk(chat: Chat) -> None:
    """Past [limits] max_file_bytes the upload is 413 too_large, whether the declared length
    says so or the stream does, and no partial file, row or message is left."""
    alice = await chat.user("alice")
    await chat.room("general")
    response = await post(chat, alice, "general", form(b"x" * (LIMIT + 1)))
    assert response.status == 413
    assert (await response.json())["error"] == "too_large"
    response = await post(chat, alice, "general", form(b"x" * (LIMIT * 4)))
    assert response.status == 413
    assert stored_files(chat) == []
    room = await chat.ctx.store.get_room("general")
    assert room is not None and await chat.ctx.store.latest_seq(room.id) == 0
    ok = await post(chat, alice, "general", form(b"x" * LIMIT))
    assert ok.status == 201


async def test_private_room_files_are_invisible_to_non_members(chat: Chat) -> None:
    """A non-member cannot upload to a private room (403), and its file, thumbnail and
    unknown ids all answer 404 alike."""
    alice, eve = await chat.user("alice"), await chat.user("eve")
    await chat.room("secret", private=True, members=("alice",))
    response = await post(chat, eve, "secret", form(b"nope"))
    assert response.status == 403
    response = await post(chat, alice, "secret", form(png(), "plan.png"))
    assert response.status == 201
    file = (await response.json())["file"]
    for url in (file["url"], file["thumbnail_url"], "/api/files/" + "0" * 32, "/api/files/x"):
        answer = await chat.client.get(url, headers=chat.auth(eve))
        assert answer.status == 404, url
        assert (await answer.json())["error"] == "not_found"
    assert (await chat.client.get(file["url"], headers=chat.auth(alice))).status == 200
    assert (await chat.client.get(file["url"])).status == 401


@pytest.mark.parametrize(("body", "headers", "reason"), [
    (b'{"file": "x"}', {"Content-Type": "application/json"}, "multipart/form-data"),
    (b"garbage", {"Content-Type": "multipart/form-data; boundary=xyz"}, "not valid multipart"),
    (b"--xyz\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhi\r\n--xyz--\r\n",
     {"Content-Type": "multipart/form-data; boundary=xyz"}, "no 'file' field"),
    (b"--xyz\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nhi\r\n--xyz--\r\n",
     {"Content-Type": "multipart/form-data; boundary=xyz"}, "unknown form field 'other'"),
    (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc",
     {"Content-Type": "multipart/form-data; boundary=xyz"}, ""),
])
async def test_bad_multipart_is_400_with_a_reason(chat: Chat, body: bytes,
                                                   headers: dict[str, str], reason: str) -> None:
    """A body that is not a well-formed upload form is 400 bad_request saying why, and
    nothing is stored."""
    alice = await chat.user("alice")
    await chat.room("general")
    response = await post(chat, alice, "general", body, **headers)
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] == "bad_request" and reason in answer["message"]
    assert stored_files(chat) == []


async def post_text(chat: Chat, token: str, room: str, text: str, thread: int | None = None
                    ) -> int:
    """Post a message over HTTP; its seq."""
    body: dict[str, Any] = {"text": text} if thread is None else {"text": text, "thread": thread}
    reply = await chat.client.post(f"/api/rooms/{room}/messages", json=body,
                                   headers=chat.auth(token))
    assert reply.status == 201, await reply.text()
    seq: int = (await reply.json())["seq"]
    return seq


async def test_an_upload_with_thread_is_a_reply_live_in_history_and_counted(
        backend_chat: Chat) -> None:
    """An upload with `thread` posts a reply: the 201 body, the live frame and the history
    items (of the room and of the thread) all carry `thread`, and the root counts it."""
    chat = backend_chat
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    reader = await chat.ws(bob)
    await reader.join("general")
    root = await post_text(chat, alice, "general", "the slides?")
    await reader.recv_op("message")
    response = await post(chat, alice, "general",
                          form(b"slides", "deck.pdf", text="here", thread=str(root)))
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["thread"] == root and body["file"]["name"] == "deck.pdf"
    assert await reader.recv_op("message") == body
    room = await (await chat.client.get("/api/rooms/general/messages",
                                        headers=chat.auth(bob))).json()
    [root_item, reply_item] = room["messages"]
    assert reply_item == body
    assert (root_item["replies"], root_item["last_reply"]) == (1, body["seq"])
    thread = await (await chat.client.get("/api/rooms/general/messages",
                                          params={"thread": str(root)},
                                          headers=chat.auth(bob))).json()
    assert thread["messages"] == [body]
    await reader.close()


async def test_an_upload_to_a_bad_thread_is_refused_and_keeps_nothing(backend_chat: Chat
                                                                       ) -> None:
    """A reply's seq, a seq that is not an integer (or past the largest seq) is 400
    bad_request; an unknown seq, another room's message or a deleted root 404 not_found.
    None leaves bytes on disk or takes a seq; an empty `thread` (a form's empty input) is
    no thread."""
    chat = backend_chat
    alice = await chat.user("alice")
    await chat.room("general")
    await chat.room("other")
    root = await post_text(chat, alice, "general", "root")
    reply = await post_text(chat, alice, "general", "reply", thread=root)
    gone = await post_text(chat, alice, "general", "doomed")
    writer = await chat.ws(alice)
    deleted = await writer.request({"op": "delete", "room": "general", "seq": gone}, "ack")
    assert deleted["op"] == "ack", deleted
    elsewhere = 0
    while elsewhere <= deleted["seq"]:  # a seq that exists in "other" only
        elsewhere = await post_text(chat, alice, "other", "elsewhere")
    cases = [(str(reply), 400, "bad_request"), ("999", 404, "not_found"),
             (str(elsewhere), 404, "not_found"), (str(gone), 404, "not_found"),
             ("x1", 400, "bad_request"), ("-1", 400, "bad_request"),
             (" 1", 400, "bad_request"), ("1.0", 400, "bad_request"),
             ("9" * 17, 400, "bad_request"), ("1" * 100, 400, "bad_request")]
    for thread, status, code in cases:
        response = await post(chat, alice, "general", form(b"data", thread=thread))
        assert response.status == status, (thread, await response.text())
        assert (await response.json())["error"] == code, thread
    assert stored_files(chat) == []
    assert (await writer.join("general"))["seq"] == deleted["seq"]
    response = await post(chat, alice, "general", form(b"data", thread=""))
    assert response.status == 201 and "thread" not in await response.json()
    await writer.close()
