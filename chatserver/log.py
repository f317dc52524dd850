"""Logging set-up: `[log] level` and `format` ("text" or "json", one object per line).

A record may carry fields: `log.info("connection closed ...", extra={"event":
"connection_closed", "user": ..., "duration_seconds": ...})`. In json they become top-level keys
beside `ts`, `level`, `logger` and `message` (which a field cannot replace); text shows the
message alone, which should therefore say the same in words. A `stack` field (a list of
`file:line function`, innermost last, as chatserver.stallwatch logs it) follows the message on
the same line in text.

Nothing logged may contain message text, a password or a token: log names, ids, counts and
codes (tests/integration/test_log_privacy.py holds the server to it).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from chatserver.config import LogConfig

HANDLER_NAME = "chatserver"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; any other attribute of a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record was given with `extra=`."""
    return {key: value for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # A field of a type JSON lacks is written as its str(), never dropped or fatal.
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        stack = getattr(record, "stack", None)
        if isinstance(stack, list) and stack:
            text += "; stack, innermost last: " + " > ".join(str(frame) for frame in stack)
        return text


def configure(config: LogConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = TextFormatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler (a reload calls this again); leave anyone else's alone.
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    # aiohttp's access log would put every URL (and so every webhook token) in the log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
