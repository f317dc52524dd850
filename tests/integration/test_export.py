"""`chatserver export ROOM`: every message as history gives it, one JSON line each in seq
order, streamed page by page in constant memory; `--output FILE` appears only when complete."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatserver import cli, export
from chatserver.errors import StoreUnavailable
from chatserver.protocol import message_body
from chatserver.store.base import NewMessage, Room, StoredMessage
from chatserver.store.sqlite import SqliteStore


def _new(room: Room, text: str, **extra: Any) -> NewMessage:
    return NewMessage(room_id=room.id, room=room.name, user_id=1, user="alice", text=text,
                      html=f"<p>{text}</p>", **extra)


async def _with_store(db: str, use: Callable[[SqliteStore], Awaitable[Any]]) -> Any:
    store = SqliteStore(db)
    await store.open()
    try:
        return await use(store)
    finally:
        await store.close()


async def _fill(store: SqliteStore) -> list[StoredMessage]:
    """`general`: six messages, one of them an aborted stream; `other`: one message."""
    await store.create_user("alice", "$argon2id$x")
    general = await store.create_room("general", "public", None)
    other = await store.create_room("other", "public", None)
    await store.append_message(_new(other, "elsewhere"))
    sent = []
    for i in range(6):
        extra = {"stream": "s1", "aborted": True} if i == 2 else {}
        sent.append(await store.append_message(_new(general, f"hello {i} ünï \"q\"\n", **extra)))
    return sent


@pytest.fixture
def setup(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
          ) -> tuple[Callable[..., tuple[int, bytes, str]], list[StoredMessage], Path]:
    """A configured store holding `_fill`'s rooms; `run(*args)` runs the CLI in-process and
    returns its exit status, stdout bytes and stderr."""
    db = str(tmp_path / "chat.db")
    config = tmp_path / "chat.toml"
    config.write_text(f"[store]\npath = {orjson.dumps(db).decode()}\n")
    sent = asyncio.run(_with_store(db, _fill))

    def run(*args: str) -> tuple[int, bytes, str]:
        code = cli.main(["--config", str(config), "export", *args])
        out, err = capsysbinary.readouterr()
        return code, out, err.decode()

    return run, sent, tmp_path


async def _discard(chunk: bytes) -> None:
    pass


def _lines(sent: list[StoredMessage]) -> bytes:
    return b"".join(orjson.dumps(message_body(m)) + b"\n" for m in sent)


def test_export_writes_history_items_as_json_lines_to_a_file_or_stdout(
        setup: tuple[Callable[..., tuple[int, bytes, str]], list[StoredMessage], Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each line is the message exactly as history gives it (stream and aborted included), in
    seq order across pages, only the room's; `-` and no --output write to stdout, --output FILE
    leaves no FILE.partial behind; the count goes to stderr."""
    run, sent, tmp = setup
    monkeypatch.setattr(export, "PAGE_SIZE", 4)
    lines = _lines(sent)
    assert orjson.loads(lines.splitlines()[2])["aborted"] is True
    assert [orjson.loads(line)["seq"] for line in lines.splitlines()] == [1, 2, 3, 4, 5, 6]
    for args in ((), ("--output", "-")):
        code, out, err = run("general", *args)
        assert (code, out) == (0, lines), err
        assert "exported 6 messages of room general" in err
    target = tmp / "general.jsonl"
    code, out, err = run("general", "--output", str(target))
    assert (code, out) == (0, b"") and f"to {target}" in err, err
    assert target.read_bytes() == lines
    assert sorted(p.name for p in tmp.iterdir() if "general" in p.name) == ["general.jsonl"]


def test_export_fails_cleanly_leaving_no_partial_file(
        setup: tuple[Callable[..., tuple[int, bytes, str]], list[StoredMessage], Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown room exits 1 naming it and makes no file; a store failure halfway exits 1,
    removes FILE.partial and leaves an existing FILE as it was; an unwritable path exits 1
    naming it."""
    run, _, tmp = setup
    target = tmp / "out.jsonl"
    code, out, err = run("nosuch", "--output", str(target))
    assert (code, out) == (1, b"") and "nosuch" in err and not target.exists()

    target.write_bytes(b"the previous export\n")
    monkeypatch.setattr(export, "PAGE_SIZE", 2)
    reads = 0
    real_read = SqliteStore.messages_after

    async def failing_read(self: SqliteStore, room_id: int, after: int, limit: int
                           ) -> list[StoredMessage]:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise StoreUnavailable("the message store could not complete the read")
        return await real_read(self, room_id, after, limit)

    monkeypatch.setattr(SqliteStore, "messages_after", failing_read)
    code, out, err = run("general", "--output", str(target))
    assert (code, out) == (1, b"") and "could not complete the read" in err, err
    assert target.read_bytes() == b"the previous export\n"
    assert not (tmp / "out.jsonl.partial").exists()

    missing = tmp / "no-such-dir" / "out.jsonl"
    code, _, err = run("general", "--output", str(missing))
    assert code == 1 and str(missing) in err, err


async def test_export_streams_in_pages_with_bounded_memory(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """3,000 messages (~2 MB of JSON) with 10 to a page are written in 300 writes, in seq
    order, while the export's memory peaks at a small fraction of the output's size; a message
    sent during the export (after its start) is left for the next one."""
    monkeypatch.setattr(export, "PAGE_SIZE", 10)
    store = SqliteStore(str(tmp_path / "chat.db"))
    await store.open()
    try:
        room = await store.create_room("big", "public", None)
        text = "x" * 300
        await asyncio.gather(*(store.append_message(_new(room, f"{i} {text}"))
                               for i in range(3000)))
        writes: list[int] = []
        last_seq = 0

        async def write(chunk: bytes) -> None:
            nonlocal last_seq
            writes.append(len(chunk))
            seqs = [orjson.loads(line)["seq"] for line in chunk.splitlines()]
            assert seqs == list(range(last_seq + 1, last_seq + 1 + len(seqs)))
            last_seq = seqs[-1]
            if len(writes) == 1:
                await store.append_message(_new(room, "sent during the export"))

        await export.export_room(store, room, _discard)  # warm up: connections, caches
        tracemalloc.start()
        try:
            count = await export.export_room(store, room, write)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        total = sum(writes)
        assert (count, len(writes), last_seq) == (3000, 300, 3000)
        assert total > 2_000_000 and peak < total / 10, (peak, total)
    finally:
        await store.close()
