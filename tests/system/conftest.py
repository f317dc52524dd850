"""Fixtures for system tests: the real daemon as a subprocess (see `tests.system.daemon`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.daemon import Daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A configured daemon, not started yet; every process it started is ended afterwards."""
    d = Daemon(tmp_path)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def server(daemon: Daemon) -> Daemon:
    """The daemon, started and answering /healthz."""
    daemon.start()
    return daemon
