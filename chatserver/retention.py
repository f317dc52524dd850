"""Per-room retention: the background job that removes messages older than their room keeps.

Every instance runs the job (`run`, started in the app's cleanup context): once shortly after
start-up, then hourly, each wait jittered so instances started together do not sweep together.
Removal goes through `Store.remove_messages_before` in batches of `BATCH_SIZE`, one awaited
write each with a pause between them, so the loop never blocks and sends keep their share of
the store's writer. Several instances sweeping at once is harmless: removal is idempotent.
Removed seqs stay unused (the room's last seq does not move), so history and resume simply
skip them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from chatserver import files, periodic
from chatserver.context import ChatContext
from chatserver.store.base import Room, Store

log = logging.getLogger(__name__)

# Module constants rather than configuration: tests override them; operators have no reason to.
FIRST_RUN_SECONDS = 60.0  # after start-up, once the instance has settled
INTERVAL_SECONDS = 3600.0
JITTER = 0.25  # each wait is drawn from [1 - JITTER, 1 + JITTER] times its nominal length
BATCH_SIZE = 1000  # messages per statement (and transaction)
BATCH_PAUSE_SECONDS = 0.05  # between batches: at most ~20,000 removals a second per instance

DAY_MS = 86_400_000

RemoveFiles = Callable[[Sequence[str]], Awaitable[object]]


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)


async def run_for(ctx: ChatContext) -> None:
    """`run` on the instance's store; files' bytes are removed from `[files] dir` on the
    thread pool."""
    async def remove_files(file_ids: Sequence[str]) -> None:
        await ctx.executors.run_blocking(files.remove_from_disk, files.directory(ctx),
                                         file_ids, job="retention_remove_files")

    await run(ctx.store, remove_files)


async def run(store: Store, remove_files: RemoveFiles | None = None) -> None:
    """Sweep forever (until cancelled): shortly after start-up, then every interval.
    `remove_files(ids)` removes the bytes of files whose rows went with their messages."""
    await periodic.repeat("retention sweep", lambda: sweep(store, remove_files), log,
                          first=lambda: _jittered(FIRST_RUN_SECONDS),
                          then=lambda: _jittered(INTERVAL_SECONDS))


async def sweep(store: Store, remove_files: RemoveFiles | None = None,
                now_ms: int | None = None) -> dict[str, int]:
    """One pass over every room with a retention; returns how many messages each room lost
    (rooms that lost none are left out)."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    removed: dict[str, int] = {}
    for room, days in await store.rooms_with_retention():
        count = await remove_expired(store, room, now - days * DAY_MS, remove_files)
        if count:
            removed[room.name] = count
            log.info("retention: removed %d messages older than %d days from room %s",
                     count, days, room.name)
    return removed


async def remove_expired(store: Store, room: Room, before_ms: int,
                         remove_files: RemoveFiles | None = None) -> int:
    """Remove the room's messages stored before `before_ms`, batch by batch, and the bytes of
    their files after each batch; return how many messages were removed."""
    total = 0
    while True:
        removed = await store.remove_messages_before(room.id, before_ms, BATCH_SIZE)
        total += removed.count
        if removed.file_ids and remove_files is not None:
            # Only the instance whose batch removed the rows gets the ids: bytes are removed
            # once. A failure here leaves orphaned bytes, never a message without its file.
            await remove_files(removed.file_ids)
        if not removed.more:
            return total
        await asyncio.sleep(BATCH_PAUSE_SECONDS)


__all__ = ["remove_expired", "run", "run_for", "sweep"]
