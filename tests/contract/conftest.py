"""Fixtures of the Store contract suite: every test runs once per backend in `BACKENDS`.

To hold a new backend to the contract, add its name to `BACKENDS` and a branch to
`_builder` that returns a function building an *unopened* store on storage private to the
test. Every store the builder makes for one test must share that storage, so tests can reopen
it or run two stores side by side (two server instances, or the server and the admin CLI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import pytest

from chatserver.store.base import Store

BACKENDS = ["sqlite", "postgres"]


class StoreFactory(Protocol):
    def __call__(self, *, max_pending_writes: int = ..., batch_max: int = ...) -> Store: ...


def _builder(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Store]:
    if backend == "sqlite":
        from chatserver.store.sqlite import SqliteStore

        path = str(tmp_path / "chat.db")
        return lambda **options: SqliteStore(path, **options)
    if backend == "postgres":
        from chatserver.store.postgres import PostgresStore

        # Asked for only here, so SQLite runs never start PostgreSQL: a fresh database per test
        # on the session's throwaway server (tests/services/postgres.py).
        dsn: str = request.getfixturevalue("postgres_dsn")
        return lambda **options: PostgresStore(dsn, **options)
    raise AssertionError(f"no builder for backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Builds unopened stores on one fresh storage; closes whatever a test left open."""
    build = _builder(request.param, request, tmp_path)
    made: list[Store] = []

    def make(**options: int) -> Store:
        store = build(**options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    """An open store on fresh storage."""
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()
