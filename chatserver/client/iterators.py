"""The iterators over a client's room-log frames: `messages()` and `events()`.

Both read the client's one bounded queue of room-log frames. Endless async iterators rather
than async generators: a cancelled `__anext__` (`asyncio.wait_for(anext(it), 5)` timing out)
loses no item, where a generator would be closed for good. `None` in the queue only wakes a
waiter to look at the client's end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .frames import Event, Message

if TYPE_CHECKING:
    from .core import ChatClient


class _LogIterator:
    def __init__(self, client: ChatClient, *, events: bool) -> None:
        self._client = client
        self._events = events

    async def _next(self) -> dict[str, Any]:
        client, queue = self._client, self._client._log
        while True:
            if queue.empty() and (client._closed or client._failure is not None):
                queue.put_nowait(None)  # so every other waiting iterator wakes too
                if client._failure is not None:
                    raise client._failure
                raise StopAsyncIteration
            item = await queue.get()
            # `messages()` skips the events queued before the client knew which view it had.
            if item is not None and (self._events or item["op"] == "message"):
                return item


class MessageIterator(_LogIterator):
    """`ChatClient.messages()`: the `message` frames."""

    def __init__(self, client: ChatClient) -> None:
        super().__init__(client, events=False)

    def __aiter__(self) -> MessageIterator:
        return self

    async def __anext__(self) -> Message:
        return cast(Message, await self._next())


class EventIterator(_LogIterator):
    """`ChatClient.events()`: every room-log frame (message, edited, deleted, reaction)."""

    def __init__(self, client: ChatClient) -> None:
        super().__init__(client, events=True)

    def __aiter__(self) -> EventIterator:
        return self

    async def __anext__(self) -> Event:
        return cast(Event, await self._next())
