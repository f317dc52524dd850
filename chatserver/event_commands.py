"""The client ops of room events (docs/protocol.md §10): `edit`, `delete`, `react`.

Sans-I/O like `protocol`, which calls `parse` for these ops with the fields it validates the
same way for every op (room, seq, text); this module adds what is theirs (emoji, remove).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from chatserver.errors import BadRequest

OPS: Final = frozenset({"edit", "delete", "react"})
EMOJI_MAX_BYTES: Final = 64
_SHORT_NAME: Final = re.compile(r":[a-z0-9_+-]{1,62}:")
_KEYCAP: Final = "\u20e3"
# Inside one emoji grapheme: zero-width joiner, variation selectors, tag characters (flags of
# subdivisions) are format or mark characters that belong to it.
_EMOJI_FORMAT: Final = frozenset({"\u200d", "\ufe0e", "\ufe0f"})


@dataclass(frozen=True, slots=True)
class Edit:
    ref: str | None
    room: str
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class Delete:
    ref: str | None
    room: str
    seq: int


@dataclass(frozen=True, slots=True)
class React:
    ref: str | None
    room: str
    seq: int
    emoji: str
    remove: bool


EventCommand = Edit | Delete | React


def parse(op: str, obj: dict[str, Any], ref: str | None, room: str, seq: int | None,
          text: str) -> EventCommand:
    """One of OPS, its common fields already validated by `protocol` (`text` only for edit)."""
    if seq is None:
        raise BadRequest(f"'{op}' needs 'seq', the message's seq")
    if op == "edit":
        return Edit(ref, room, seq, text)
    if op == "delete":
        return Delete(ref, room, seq)
    remove = obj.get("remove", False)
    if type(remove) is not bool:
        raise BadRequest("'remove' must be true or false")
    return React(ref, room, seq, check_emoji(obj.get("emoji")), remove)


def check_emoji(value: object) -> str:
    """One emoji grapheme or a `:short_name:`, 1..64 UTF-8 bytes, no whitespace.

    Without a grapheme segmenter "one emoji" is approximated: no letters, no punctuation, no
    whitespace or control characters, digits only in a keycap; everything else (symbols,
    marks, joiners, selectors, regional indicators, tags) may combine."""
    if not isinstance(value, str) or not value:
        raise BadRequest("'react' needs a string field 'emoji'")
    if len(value.encode("utf-8", "surrogatepass")) > EMOJI_MAX_BYTES:
        raise BadRequest(f"'emoji' is longer than {EMOJI_MAX_BYTES} bytes")
    if value.startswith(":"):
        if not _SHORT_NAME.fullmatch(value):
            raise BadRequest("a short name 'emoji' must look like :thumbs_up:")
        return value
    for char in value:
        category = unicodedata.category(char)
        if char in _EMOJI_FORMAT or category in ("So", "Sk", "Mn", "Me"):
            continue
        if category == "Cf" and 0xE0020 <= ord(char) <= 0xE007F:  # tag characters
            continue
        if char in "0123456789#*" and _KEYCAP in value:
            continue
        raise BadRequest("'emoji' must be one emoji or a :short_name:")
    if unicodedata.category(value[0]) in ("Mn", "Me"):
        raise BadRequest("'emoji' must be one emoji or a :short_name:")
    return value


__all__ = ["OPS", "Delete", "Edit", "EventCommand", "React", "check_emoji", "parse"]
