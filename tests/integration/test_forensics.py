"""Event-loop lag forensics on a running server: a callback that holds the loop past
`[log] slow_callback_ms` is logged once, by name and place, with its stack."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatserver.app import create_app
from chatserver.app_keys import CONTEXT
from chatserver.config import LogConfig, load_config
from chatserver.log import JsonFormatter
from chatserver.reload import reload
from chatserver.stallwatch import StallWatch

from .conftest import make_config

BLOCK_SECONDS = 0.3
WAIT_FOR_REPORT = 10.0  # generous: a slow, noisy machine may take its time to log


def _block_the_loop_on_purpose() -> None:
    token = "sekrit-local-variable"  # a local the stall line must never show
    time.sleep(BLOCK_SECONDS)
    assert token


SLEEP_LINE = _block_the_loop_on_purpose.__code__.co_firstlineno + next(
    i for i, line in enumerate(inspect.getsource(_block_the_loop_on_purpose).splitlines())
    if "time.sleep" in line)


async def _stall_records(watch: StallWatch, caplog: pytest.LogCaptureFixture, stalls_before: int
                         ) -> list[logging.LogRecord]:
    """Wait until the watch has logged a stall naming our function; every such record."""
    deadline = time.monotonic() + WAIT_FOR_REPORT
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        found = [r for r in caplog.records if r.name == "chatserver.stallwatch"
                 and "_block_the_loop_on_purpose" in r.getMessage()]
        if found and watch.stalls > stalls_before:
            await asyncio.sleep(0.3)  # a second report, if one were coming, would be in by now
            return [r for r in caplog.records if r.name == "chatserver.stallwatch"
                    and "_block_the_loop_on_purpose" in r.getMessage()]
    raise AssertionError(f"no stall reported within {WAIT_FOR_REPORT} s: {caplog.text}")


async def test_a_blocking_callback_is_logged_once_with_its_name_place_and_stack(
        tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A callback that sleeps 0.3 s on the loop is one warning naming it and its file:line,
    blocked at least 0.25 s; the JSON form carries the stack as a field, and no variable."""
    config = dataclasses.replace(make_config(tmp_path), log=LogConfig(slow_callback_ms=50))
    client = await aiohttp_client(create_app(config))
    watch = client.app[CONTEXT].lag.stall_watch
    assert watch.running and watch.threshold == 0.05
    await asyncio.sleep(0.3)  # let start-up work settle
    caplog.set_level(logging.DEBUG)
    stalls_before = watch.stalls

    asyncio.get_running_loop().call_soon(_block_the_loop_on_purpose)
    records = await _stall_records(watch, caplog, stalls_before)

    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    place = f"tests/integration/test_forensics.py:{SLEEP_LINE} _block_the_loop_on_purpose"
    assert f"in callback _block_the_loop_on_purpose at {place}" in message, message
    fields: dict[str, Any] = record.__dict__
    assert fields["event"] == "loop_blocked" and fields["culprit"] == "_block_the_loop_on_purpose"
    assert fields["blocked_seconds"] >= 0.25, message
    assert fields["stack"][-1] == place
    assert watch.stalls > stalls_before and watch.stall_seconds_total >= 0.25

    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["stack"][-1] == place and entry["at"] == place
    assert "sekrit" not in caplog.text and "sekrit" not in JsonFormatter().format(record)


async def test_slow_callback_ms_reloads_and_0_stops_the_watchdog(
        tmp_path: Path, aiohttp_client: Any) -> None:
    """SIGHUP applies `[log] slow_callback_ms`: 0 stops the heartbeat and its thread, a
    threshold again starts them."""
    path = tmp_path / "chat.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "chat.db"}"\n[log]\nslow_callback_ms = 0\n')
    client = await aiohttp_client(create_app(load_config(str(path))))
    ctx = client.app[CONTEXT]
    watch = ctx.lag.stall_watch
    assert not watch.running

    path.write_text(path.read_text().replace("slow_callback_ms = 0", "slow_callback_ms = 250"))
    assert reload(ctx) is not None
    assert watch.running and watch.threshold == 0.25

    path.write_text(path.read_text().replace("slow_callback_ms = 250", "slow_callback_ms = 0"))
    assert reload(ctx) is not None
    assert not watch.running
