"""Streaming one message to a room: the `Stream` that `ChatClient.stream()` yields."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, cast

import aiohttp
import orjson

from .errors import ChatClientError, ConnectionLost, ServerError, TooLarge
from .frames import Ack

if TYPE_CHECKING:
    from .core import ChatClient

STREAM_GIVE_UP_TIMEOUT = 2.0  # seconds a failed `stream()` block may spend discarding


class Stream:
    """One message being streamed to a room (from `ChatClient.stream()`)."""

    def __init__(self, client: ChatClient, room: str, stream_id: str, generation: int,
                 ref: str, *, thread: int | None = None) -> None:
        self.room = room
        self.thread = thread  # the root's seq when the message is a thread's reply
        self.id = stream_id
        self.ref = ref  # every delta carries it, so the server's refusal of one comes back
        self.ack: Ack | None = None  # set by `end()` unless the stream was discarded
        self.discarded = False
        self.ended = False
        self.bytes_written = 0
        self._client = client
        self._generation = generation
        self._error: ServerError | None = None

    async def write(self, text: str) -> None:
        """Append text; readers see it at once. Raises the server's refusal of an earlier
        piece, `TooLarge` (nothing sent) past `max_message_bytes`, or `ConnectionLost`."""
        if self.ended:
            raise ChatClientError(f"stream {self.id} has ended", code="stream_ended")
        self._raise_refusal()
        if not text:
            return  # the server refuses empty deltas; an empty piece changes nothing
        size = len(text.encode("utf-8"))
        limit = self._client.hello.get("limits", {}).get("max_message_bytes")
        if isinstance(limit, int) and self.bytes_written + size > limit:
            raise TooLarge({"code": "too_large", "message":
                            f"the streamed text would pass max_message_bytes ({limit} bytes); "
                            f"this piece ({size} bytes) was not sent"})
        ws = self._client._ws_for(self._generation)
        # Counted when sent: a piece the server later refuses still counts here, so this
        # check errs on the strict side (the refusal does not say which piece it was).
        frame = {"op": "stream_delta", "stream": self.id, "text": text, "ref": self.ref}
        try:
            await ws.send_str(orjson.dumps(frame).decode())
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ConnectionLost(f"connection lost mid-stream: {exc}") from exc
        self.bytes_written += size

    async def end(self) -> Ack | None:
        """Store the whole text as one message and return its ack; None if nothing was
        written (the server discards the stream and stores nothing)."""
        if self.ended:
            return self.ack
        self._client._ws_for(self._generation)
        try:
            reply = await self._client.request({"op": "stream_end", "stream": self.id})
        finally:
            self.ended = True
            self._client._streams.pop(self.ref, None)
        if reply.get("discarded"):
            self.discarded = True
        else:
            self.ack = cast(Ack, reply)
        # Replies come in order: a refused delta's error arrived before this ack.
        self._raise_refusal()
        return self.ack

    def _refused(self, error: ServerError) -> None:
        if self._error is None:
            self._error = error

    def _raise_refusal(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    async def _give_up(self) -> None:
        """The `stream()` block raised: discard the stream if nothing was written; otherwise
        leave it to the server, which stores the text so far marked `aborted`."""
        if self.ended or self.bytes_written:
            self._client._streams.pop(self.ref, None)
            return
        with contextlib.suppress(ChatClientError, TimeoutError):
            await asyncio.wait_for(self.end(), STREAM_GIVE_UP_TIMEOUT)
