"""What both stores do with a history page's thread rows (migration 0007; docs/protocol.md
§10, "Threads"): the SQL differs only in its placeholders, so it stays with each backend
(postgres_threads, sqlite_threads); the folding of its rows into the page is written once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from chatserver.store.base import StoredMessage, ThreadSummary


def attach_threads(messages: list[StoredMessage], rows: Iterable[Any]) -> list[StoredMessage]:
    """`messages` with each reply's `thread` and each root's `replies` filled in, from the
    page's thread rows: kind 0 (seq, root) for a reply, kind 1 (root, count, last reply)."""
    threads: dict[int, int] = {}
    summaries: dict[int, ThreadSummary] = {}
    for kind, seq, value, last in rows:
        if kind == 0:
            threads[seq] = value
        else:
            summaries[seq] = ThreadSummary(count=value, last=last)
    if not threads and not summaries:
        return messages
    return [
        dataclasses.replace(m, thread=threads.get(m.seq), replies=summaries.get(m.seq))
        if m.seq in threads or m.seq in summaries else m
        for m in messages
    ]


__all__ = ["attach_threads"]
