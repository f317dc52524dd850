"""WebSocket framing of the server's frames, done once per message rather than per recipient.

A server-to-client text frame is an unmasked header followed by the payload (RFC 6455 5.2).
Fan-out builds it once and every recipient's outbox queues the same bytes, so delivering a
message costs a queue append and a share of one socket write, not a header and a copy each.
Compression is off (docs/protocol.md): one frame then serves every connection.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """The complete frame (header and payload) carrying `payload` as one text message."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 65536:
        return _LEN16.pack(_FIN_TEXT, 126, size) + payload
    return _LEN64.pack(_FIN_TEXT, 127, size) + payload


def payload_of(frame: bytes) -> bytes:
    """The payload of a frame built by `text_frame` (to join two stream deltas, say)."""
    size = frame[1] & 0x7F
    return frame[2 + {126: 2, 127: 8}.get(size, 0):]
