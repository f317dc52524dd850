"""The message path: render off the loop, store with group commit, then publish once.

`publish` runs only after the store reports the message durable, so live frames always equal
history, and it runs in the same loop step that resumes the append, which preserves seq order
across concurrent appends (the store resolves a batch's futures in seq order).
"""

from __future__ import annotations

import html as _html
import time
from collections.abc import Callable

from chatserver import mentions, protocol
from chatserver.broker.base import Broker, Event
from chatserver.executors import Executors
from chatserver.store.base import NewMessage, Room, Store, StoredFile, StoredMessage, User

OnDurable = Callable[[StoredMessage], None]


class MessageService:
    def __init__(self, store: Store, broker: Broker, executors: Executors) -> None:
        self.store = store
        self.broker = broker
        self.executors = executors
        self.stored = 0

    async def render(self, text: str) -> str:
        return await self.executors.render_markdown(text)

    async def render_message(self, text: str) -> mentions.Rendered:
        """`render` plus the text's mentions, resolved to existing users (chatserver.mentions)."""
        return await mentions.render(self.executors, self.store, text)

    async def store_and_publish(
        self, message: NewMessage, on_durable: OnDurable | None = None, *,
        received: float = 0.0,
    ) -> StoredMessage:
        """Append; once durable, call `on_durable` (e.g. enqueue the sender's ack), publish.

        `received`: `time.monotonic()` when the server got the message (0: now), the start
        of its delivery latency."""
        received = received or time.monotonic()
        stored = await self.store.append_message(message)
        self.stored += 1
        if on_durable is not None:
            on_durable(stored)
        # A stream's final message carries "e:<stream>" so instances mirroring the stream
        # forget it (see Streams.observe).
        self.broker.publish(
            Event("message", stored.room, protocol.message_frame(stored), seq=stored.seq,
                  key=f"e:{stored.stream}" if stored.stream else "", received=received)
        )
        return stored

    async def post(
        self,
        room: Room,
        user: User,
        text: str,
        *,
        stream: str | None = None,
        aborted: bool = False,
        on_durable: OnDurable | None = None,
        thread: int | None = None,
    ) -> StoredMessage:
        received = time.monotonic()
        rendered = await self.render_message(text)
        html = rendered.html
        return await self.store_and_publish(
            rendered.into(NewMessage(room.id, room.name, user.id, user.name, text, html,
                                     stream, aborted, thread=thread)),
            on_durable, received=received,
        )

    async def post_file(
        self,
        room: Room,
        user: User,
        caption: str | None,
        file: StoredFile,
        *,
        on_durable: OnDurable | None = None,
        thread: int | None = None,
    ) -> StoredMessage:
        """Post an upload already recorded (chatserver.files): the caption as the text, or
        without one the file's name, as plain text (escaped, not Markdown: a name like
        `a_b_c.txt` must not turn italic), so a client that knows nothing of files still
        shows what was posted. `thread`: a reply's root, already checked (chatserver.threads)."""
        received = time.monotonic()
        if caption:
            rendered = await self.render_message(caption)
            text, html = caption, rendered.html
        else:
            rendered = mentions.Rendered("")
            text, html = file.name, f"<p>{_html.escape(file.name, quote=False)}</p>"
        return await self.store_and_publish(
            rendered.into(NewMessage(room.id, room.name, user.id, user.name, text, html,
                                     file=file, thread=thread)),
            on_durable, received=received,
        )
