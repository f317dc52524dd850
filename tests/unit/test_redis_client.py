"""The Redis broker's client: what making a connection costs the event loop."""

from __future__ import annotations

import importlib.metadata

import pytest

from chatserver.broker.redis import _client


def test_a_new_connection_reads_no_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py looks its version up in the installed packages' metadata (file reads) for
    every connection it makes unless given its driver info; under a burst of connects that
    blocked the loop for 0.35 s. The broker resolves it once, at import."""
    lookups: list[str] = []
    real_version = importlib.metadata.version

    def counting_version(name: str) -> str:
        lookups.append(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", counting_version)
    pool = _client("redis://127.0.0.1:1/0", {}).connection_pool
    connections = [pool.make_connection() for _ in range(3)]
    assert lookups == []
    assert all(c.driver_info is not None and c.driver_info.lib_version for c in connections)
