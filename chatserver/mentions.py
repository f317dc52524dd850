"""Mentions (docs/protocol.md §10, "Mentions and read positions"): `@name` and `@room`.

The worker that renders a message's Markdown also finds its mentions
(`workers.markdown.render_message`): it knows what is code, and it already runs off the loop.
Here, on the loop, the names are looked up (one indexed query, only for a text with an
`@name` in it) and the ones that are nobody's are unwrapped from their `<span
class="mention">`. What a message mentions is fixed when it is posted, stored with it in the
same transaction, and shown the same in its live frame and in history: the mentioned users'
names sorted, and `mentions_room`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from chatserver.executors import Executors
from chatserver.store.base import Mention, NewMessage, Store
from workers import markdown

# Unwrapping unknown names is one str.replace per name over the html: C speed, but a
# crafted message (16 KB, 50 unknown names) would still scan ~1 MB on the loop. Past this
# many characters scanned it goes to the pool instead.
_INLINE_UNWRAP_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message's html and what it mentions, ready for `NewMessage`."""

    html: str
    mentions: tuple[Mention, ...] = ()
    mentions_room: bool = False

    def into(self, message: NewMessage) -> NewMessage:
        """`message` (built with `self.html`) carrying these mentions."""
        if not self.mentions and not self.mentions_room:
            return message
        return dataclasses.replace(message, mentions=self.mentions,
                                   mentions_room=self.mentions_room)


async def render(executors: Executors, store: Store, text: str) -> Rendered:
    """Render `text` and resolve its mentions to existing users."""
    html, names, room = await executors.render_message(text)
    if not names:
        return Rendered(html, (), room)
    ids = await store.user_ids(names)
    unknown = [name for name in names if name not in ids]
    if unknown:
        if len(html) * len(unknown) <= _INLINE_UNWRAP_CHARS:
            html = markdown.unwrap_mentions(html, unknown)
        else:
            html = await executors.run_cpu(markdown.unwrap_mentions, html, unknown,
                                           job="render_markdown")
    mentions = tuple(Mention(ids[name], name) for name in sorted(ids))
    return Rendered(html, mentions, room)


__all__ = ["Rendered", "render"]
