"""SIGHUP reload: [limits] and [log] apply to the running server; other sections and bad
files change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatserver.app import create_app
from chatserver.app_keys import CONTEXT
from chatserver.config import load_config
from chatserver.reload import reload

BASE = """
[server]
port = {port}
[store]
path = "{db}"
[limits.rate]
per_second = 0.01
burst = {burst}
[log]
level = "{level}"
"""


def _write(path: Path, db: Path, *, burst: int = 1, level: str = "info", port: int = 8080
           ) -> None:
    path.write_text(BASE.format(db=db, burst=burst, level=level, port=port))


async def test_reload_applies_limits_and_keeps_what_needs_a_restart(
        tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A reloaded rate limit takes effect at once; a changed port is reported and kept; a file
    that does not validate changes nothing."""
    path, db = tmp_path / "chat.toml", tmp_path / "chat.db"
    _write(path, db, burst=1)
    client = await aiohttp_client(create_app(load_config(str(path))))
    ctx = client.app[CONTEXT]
    user = await ctx.store.create_user("alice", "x")
    room = await ctx.rooms.create("general", False, user)
    assert ctx.send_limiter.take("alice", 0.0) == 0.0
    assert ctx.send_limiter.take("alice", 0.0) > 0, "burst 1: the second send must wait"

    _write(path, db, burst=50, level="debug", port=9999)
    fresh = reload(ctx)
    assert fresh is not None and ctx.config is fresh
    assert ctx.config.limits.rate.burst == 50 and ctx.config.server.port == 8080
    assert all(ctx.send_limiter.take("alice", 0.0) == 0.0 for _ in range(10))
    assert "[server] changed but takes a restart" in caplog.text
    assert room.name == "general"

    path.write_text("[limits]\nmax_message_bytes = -1\n")
    assert reload(ctx) is None
    assert ctx.config is fresh and "not reloaded" in caplog.text
