"""The sans-I/O protocol: every op parses to its command; every bad frame names its problem."""

from __future__ import annotations

import pytest

from chatserver import protocol
from chatserver.protocol import (
    FrameError,
    History,
    Join,
    Leave,
    Ping,
    Send,
    StreamDelta,
    StreamEnd,
    StreamStart,
    Typing,
)
from chatserver.store.base import StoredMessage

MAX = 100


@pytest.mark.parametrize(
    "frame, expected",
    [
        ('{"op":"join","room":"general"}', Join(None, "general", None)),
        ('{"op":"join","room":"general","after":7,"ref":"a"}', Join("a", "general", 7)),
        ('{"op":"leave","room":"r1"}', Leave(None, "r1")),
        ('{"op":"send","room":"r","text":"hi"}', Send(None, "r", "hi")),
        ('{"op":"history","room":"r"}', History(None, "r", None, None, 50)),
        ('{"op":"history","room":"r","before":9,"limit":200}', History(None, "r", 9, None, 200)),
        ('{"op":"typing","room":"r"}', Typing(None, "r")),
        ('{"op":"stream_start","room":"r"}', StreamStart(None, "r")),
        ('{"op":"stream_start","room":"r","thread":3}', StreamStart(None, "r", 3)),
        ('{"op":"stream_delta","stream":"s1","text":"x"}', StreamDelta(None, "s1", "x")),
        ('{"op":"stream_end","stream":"s1"}', StreamEnd(None, "s1")),
        ('{"op":"ping","ref":"p","extra":1}', Ping("p")),
    ],
)
def test_each_op_parses_to_its_command(frame: str, expected: object) -> None:
    """Each client op becomes its typed command; unknown extra fields are ignored."""
    assert protocol.parse_command(frame, MAX) == expected


@pytest.mark.parametrize(
    "frame, code, ref",
    [
        ("not json", "bad_request", None),
        ("[1,2]", "bad_request", None),
        ('"send"', "bad_request", None),
        ("{}", "bad_request", None),
        ('{"op":5}', "bad_request", None),
        ('{"op":"fly","ref":"q"}', "unknown_op", "q"),
        ('{"op":"send","room":"r","text":"","ref":"e"}', "bad_request", "e"),
        ('{"op":"send","room":"r","text":["x"]}', "bad_request", None),
        ('{"op":"send","room":"R!","text":"x"}', "bad_request", None),
        ('{"op":"send","room":5,"text":"x"}', "bad_request", None),
        ('{"op":"send","room":"r","text":"' + "x" * 101 + '","ref":"big"}', "too_large", "big"),
        ('{"op":"send","room":"r","text":"' + "é" * 51 + '"}', "too_large", None),
        ('{"op":"join","room":"r","after":true}', "bad_request", None),
        ('{"op":"join","room":"r","after":-1}', "bad_request", None),
        ('{"op":"join","room":"r","after":"3"}', "bad_request", None),
        ('{"op":"history","room":"r","limit":0}', "bad_request", None),
        ('{"op":"history","room":"r","limit":201}', "bad_request", None),
        ('{"op":"history","room":"r","limit":2.0}', "bad_request", None),
        ('{"op":"history","room":"r","before":1,"after":2}', "bad_request", None),
        ('{"op":"ping","ref":5}', "bad_request", None),
        ('{"op":"ping","ref":"' + "r" * 65 + '"}', "bad_request", None),
        ('{"op":"stream_delta","stream":"","text":"x"}', "bad_request", None),
        ('{"op":"stream_start","room":"r","thread":"3"}', "bad_request", None),
        ('{"op":"send","room":"r","text":"\\ud800"}', "bad_request", None),
    ('{"op":"send","room":"r","text":"a\\u0000b"}', "bad_request", None),
    ],
)
def test_bad_frames_raise_the_matching_code(frame: str, code: str, ref: str | None) -> None:
    """A bad frame raises the protocol's error code and keeps its ref when the ref was valid."""
    with pytest.raises(FrameError) as caught:
        protocol.parse_command(frame, MAX)
    assert caught.value.error.code == code
    assert caught.value.ref == ref
    assert caught.value.error.message


def test_message_frame_is_encoded_once_with_the_contract_fields() -> None:
    """The message frame carries op, room, seq, id, user, text, html and ts, and stream if any."""
    stored = StoredMessage("r", 3, "id3", "alice", "t", "<p>t</p>", "2026-11-22T10:00:00.123Z")
    body = protocol.message_body(stored)
    assert list(body) == ["op", "room", "seq", "id", "user", "text", "html", "ts"]
    streamed = StoredMessage("r", 4, "id4", "bot", "t", "h", "ts", stream="s", aborted=True)
    assert protocol.message_body(streamed)["stream"] == "s"
    assert protocol.message_body(streamed)["aborted"] is True
    assert protocol.message_frame(stored).startswith(b'{"op":"message"')
