"""Store backends behind one interface (`chatserver.store.base.Store`)."""

from __future__ import annotations

from chatserver.config import StoreConfig
from chatserver.store.base import Store


def make_store(config: StoreConfig) -> Store:
    """Backends are chosen by name and imported only when chosen."""
    if config.backend == "sqlite":
        from chatserver.store.sqlite import SqliteStore

        return SqliteStore(config.path)
    if config.backend == "postgres":
        from chatserver.store.postgres import PostgresStore

        return PostgresStore(config.dsn, pool_size=config.pool_size)
    raise ValueError(f"store backend {config.backend!r} is not available in this build")
