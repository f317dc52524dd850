"""Structured logs: `[log] format = "json"` writes one object per line with a record's fields
as keys; "text" writes the message (and a compact stack) on one line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from chatserver import log as logsetup
from chatserver.config import LogConfig
from chatserver.log import JsonFormatter, TextFormatter


def _record(message: str, *args: object, exc: BaseException | None = None,
            **fields: object) -> logging.LogRecord:
    logger = logging.getLogger("chatserver.test")
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, exc_info,
                             extra=fields)


def test_json_line_carries_the_fields_as_top_level_keys() -> None:
    """A record's `extra=` fields become keys of its one-line JSON object."""
    record = _record("connection closed user=%s", "alice", event="connection_closed",
                     user="alice", duration_seconds=12.5, frames_in=3, bytes_out=2048, code=1000)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["message"] == "connection closed user=alice"
    assert (entry["level"], entry["logger"]) == ("info", "chatserver.test")
    assert entry["ts"].endswith("Z")
    assert {key: entry[key] for key in ("event", "user", "duration_seconds", "frames_in",
                                        "bytes_out", "code")} == {
        "event": "connection_closed", "user": "alice", "duration_seconds": 12.5,
        "frames_in": 3, "bytes_out": 2048, "code": 1000}
    assert "args" not in entry and "msg" not in entry, "no LogRecord internals"


class _Opaque:
    def __str__(self) -> str:
        return "opaque"


def test_json_fields_cannot_replace_the_standard_keys_or_break_the_line() -> None:
    """A field named like a standard key is ignored, and a value JSON lacks is its str()."""
    record = _record("hello", level="fake", stack=["a.py:1 f"], what=_Opaque())
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["level"] == "info" and entry["message"] == "hello"
    assert entry["stack"] == ["a.py:1 f"] and entry["what"] == "opaque"


def test_json_exception_is_a_field_of_the_same_line() -> None:
    """An exception's traceback is a string field, so the object stays one line."""
    try:
        raise ValueError("boom")
    except ValueError as error:
        record = _record("failed", exc=error)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in orjson.loads(line)["exception"]


def test_text_is_the_message_and_a_stack_follows_on_the_same_line() -> None:
    """Text shows the message alone; a `stack` field follows it, innermost last."""
    formatter = TextFormatter("%(levelname)s %(message)s")
    assert formatter.format(_record("hi %s", "there", user="alice")) == "INFO hi there"
    line = formatter.format(_record("event loop blocked", stack=["a.py:1 f", "b.py:2 g"]))
    assert line == "INFO event loop blocked; stack, innermost last: a.py:1 f > b.py:2 g"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_replaces_only_its_own_handler(root_logger: logging.Logger) -> None:
    """A reload re-configures chatserver's handler in place and leaves other handlers be."""
    other = logging.StreamHandler(io.StringIO())
    root_logger.addHandler(other)
    logsetup.configure(LogConfig(format="text"))
    logsetup.configure(LogConfig(format="json", level="debug"))
    ours = [h for h in root_logger.handlers if h.get_name() == logsetup.HANDLER_NAME]
    assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
    assert other in root_logger.handlers and root_logger.level == logging.DEBUG
