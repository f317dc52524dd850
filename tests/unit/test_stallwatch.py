"""Stall forensics, the pure part: from sampled stacks to the one line that names the culprit;
and the `[log] slow_callback_ms` key."""

from __future__ import annotations

import asyncio.events
import inspect
import sys

import orjson
import pytest
from aiohttp import web_protocol

from chatserver import hub
from chatserver.config import DEFAULT_CONFIG, ConfigError, parse_config
from chatserver.stallwatch import (
    FrameInfo,
    StallReport,
    _Locations,
    beat_interval,
    culprit,
    format_stack,
    summarise,
)

RUNNER = (
    FrameInfo("chatserver/cli.py", 160, "main", ours=True),
    FrameInfo("chatserver/daemon.py", 110, "run", ours=True),
    FrameInfo("uvloop/__init__.py", 105, "run", loop=True),
    FrameInfo("asyncio/runners.py", 118, "Runner.run", loop=True),
)
REQUEST = (
    FrameInfo("aiohttp/web_protocol.py", 452, "RequestHandler.start", coroutine=True),
    FrameInfo("aiohttp/web_protocol.py", 380, "RequestHandler._handle_request", coroutine=True),
    FrameInfo("chatserver/connection.py", 118, "websocket_handler", coroutine=True, ours=True),
    FrameInfo("chatserver/connection.py", 151, "_read_loop", coroutine=True, ours=True),
    FrameInfo("chatserver/handlers.py", 88, "on_send", coroutine=True, ours=True),
    FrameInfo("json/encoder.py", 200, "JSONEncoder.encode"),
)
PLAIN_CALLBACK = (
    FrameInfo("asyncio/base_events.py", 607, "BaseEventLoop.run_forever", loop=True),
    FrameInfo("asyncio/base_events.py", 1922, "BaseEventLoop._run_once", loop=True),
    FrameInfo("asyncio/events.py", 80, "Handle._run", loop=True),
    FrameInfo("chatserver/hub.py", 210, "Hub.deliver", ours=True),
)


def test_a_coroutine_is_named_by_our_outermost_frame_and_placed_by_our_innermost() -> None:
    """In a request task, the handler is our outermost coroutine (not aiohttp's task), and
    the place is our innermost frame (not the library it called)."""
    found = culprit(RUNNER + REQUEST)
    assert (found.kind, found.name) == ("coroutine", "websocket_handler")
    assert found.at is not None and found.at.text() == "chatserver/handlers.py:88 on_send"
    assert found.frames == REQUEST, "the stack starts at the callback, not at main()"


def test_a_plain_callback_is_named_as_a_callback() -> None:
    """A function the loop called (call_soon, a timer, a future's callback) is a callback."""
    found = culprit(PLAIN_CALLBACK)
    assert (found.kind, found.name) == ("callback", "Hub.deliver")
    assert found.frames == PLAIN_CALLBACK[-1:]


def test_library_code_alone_is_named_by_the_callback_and_its_innermost_frame() -> None:
    """With none of our frames, the callback the loop ran names the stall."""
    found = culprit(RUNNER + REQUEST[:2])
    assert (found.kind, found.name) == ("coroutine", "RequestHandler.start")
    assert found.at == REQUEST[1]


def test_a_stack_of_loop_machinery_alone_is_the_loop_itself() -> None:
    """Sampled between callbacks (or waiting for events), nothing but the loop is running."""
    assert culprit(RUNNER).kind == "event loop"


def test_stack_is_innermost_last_and_keeps_the_innermost_frames() -> None:
    """The compact stack lists `file:line function` outermost first, cut from the outside."""
    assert format_stack(REQUEST[-2:]) == ["chatserver/handlers.py:88 on_send",
                                          "json/encoder.py:200 JSONEncoder.encode"]
    cut = format_stack(REQUEST, depth=2)
    assert cut == ["... 4 outer frames", "chatserver/handlers.py:88 on_send",
                   "json/encoder.py:200 JSONEncoder.encode"]


def test_report_names_what_most_samples_show() -> None:
    """Samples of the loop's own work do not outvote the callback; the count says how many
    samples agree, and the line reads as documented."""
    samples = [RUNNER + REQUEST, RUNNER + REQUEST, RUNNER + REQUEST[:4], RUNNER, PLAIN_CALLBACK]
    report = summarise(0.31234, samples)
    assert report.message() == (
        "event loop blocked for 0.312s in coroutine websocket_handler at "
        "chatserver/handlers.py:88 on_send (3 of 5 samples)")
    fields = report.fields()
    assert fields["event"] == "loop_blocked" and fields["blocked_seconds"] == 0.31234
    assert (fields["culprit_kind"], fields["culprit"]) == ("coroutine", "websocket_handler")
    assert fields["stack"][-1] == "json/encoder.py:200 JSONEncoder.encode"
    assert (fields["samples"], fields["samples_agreeing"]) == (5, 3)
    orjson.dumps(fields)  # every field is JSON


def test_a_stall_without_samples_says_so_and_reports_garbage_collection() -> None:
    """A stall the watchdog thread could not sample is still reported, with the collector's
    share of it."""
    report = summarise(0.2, [], gc_seconds=0.15, gc_generation=2)
    text = report.message()
    assert text.startswith("event loop blocked for 0.200s; no stack sampled")
    assert text.endswith("; garbage collection (generation 2) took 0.150s of it")
    assert "stack" not in report.fields() and report.fields()["gc_generation"] == 2


def test_a_stall_still_in_progress_reads_differently() -> None:
    """The early report of a loop stuck for seconds is a different event from the final one."""
    report = StallReport(5.0, culprit(PLAIN_CALLBACK), 1, 1, still_blocked=True)
    assert report.message().startswith("event loop still blocked after 5.000s in callback")
    assert report.fields()["event"] == "loop_still_blocked"


def test_locations_shorten_paths_and_class_frames() -> None:
    """Paths are relative to the stdlib, site-packages or the checkout; chatserver is ours
    wherever it is installed; asyncio's callback runner is loop machinery."""
    locations = _Locations()
    run = locations.frame(asyncio.events.Handle._run.__code__, 80)
    assert (run.path, run.function, run.loop, run.ours) == (
        "asyncio/events.py", "Handle._run", True, False)
    start = locations.frame(web_protocol.RequestHandler.start.__code__, 1)
    assert (start.path, start.coroutine, start.ours, start.loop) == (
        "aiohttp/web_protocol.py", True, False, False)
    deliver = locations.frame(hub.Hub.deliver.__code__, 1)
    assert (deliver.path, deliver.ours) == ("chatserver/hub.py", True)


def test_a_sampled_stack_holds_code_locations_only() -> None:
    """A sample of this very frame ends in this test, at this line, with no variables."""
    secret = "do-not-log-me"  # noqa: F841 — a local a sample must not carry
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    stack = _Locations().stack(sys._getframe())
    innermost = stack[-1]
    assert innermost == FrameInfo("tests/unit/test_stallwatch.py", line,
                                  "test_a_sampled_stack_holds_code_locations_only",
                                  coroutine=False, ours=True, loop=False)
    assert "do-not-log-me" not in repr(stack)


def test_heartbeat_is_frequent_enough_for_the_threshold() -> None:
    """The loop stamps its heartbeat at least five times per threshold, at most every 20 ms."""
    assert beat_interval(0.1) == 0.02 and beat_interval(0.05) == 0.01


def test_slow_callback_ms_defaults_to_100_and_0_turns_it_off() -> None:
    """`[log] slow_callback_ms`: 100 by default; 0 or 10..60000 milliseconds."""
    assert DEFAULT_CONFIG.log.slow_callback_ms == 100
    assert parse_config({"log": {"slow_callback_ms": 0}}, "f.toml").log.slow_callback_ms == 0
    assert parse_config({"log": {"slow_callback_ms": 10}}, "f.toml").log.slow_callback_ms == 10


@pytest.mark.parametrize(("value", "expected"), [
    (5, "must be 0 (off) or 10..60000 milliseconds, got 5"),
    (-1, "must be 0 (off) or 10..60000 milliseconds, got -1"),
    (60001, "must be 0 (off) or 10..60000 milliseconds, got 60001"),
    (0.5, "expected an integer, got float 0.5"),
    (True, "expected an integer, got boolean true"),
])
def test_bad_slow_callback_ms_names_the_file_and_key(value: object, expected: str) -> None:
    """A bad threshold stops start-up with one line naming the file and the key."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"log": {"slow_callback_ms": value}}, "chat.toml")
    assert str(caught.value) == f"chat.toml: [log] slow_callback_ms: {expected}"
