"""The `chat` console script against the real daemon: send, history, tail across a restart,
stream from a pipe, and the one-line errors with their exit statuses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.system.daemon import Daemon, connect, free_port, to_thread

pytestmark = pytest.mark.system

CHAT = str(Path(sys.executable).with_name("chat"))  # the console script pip installed
LINE_TIMEOUT = 20.0  # a reconnect after a restart waits up to 5 s by design, plus start-up


def run_chat(*args: str, stdin: str = "", env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return subprocess.run([CHAT, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env={**environment, **(env or {})})


def chat_env(daemon: Daemon, token: str) -> dict[str, str]:
    return {"CHAT_URL": daemon.base_url, "CHAT_TOKEN": token}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    """One daemon for this module (the tail test, last, restarts it), with rooms `general`
    and `tail`, and alice."""
    daemon = Daemon(tmp_path_factory.mktemp("chat-cli"))
    try:
        daemon.start()
        daemon.cli_ok("room", "create", "general")
        daemon.cli_ok("room", "create", "tail")
        yield daemon, daemon.add_user("alice")
    finally:
        daemon.stop()


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), LINE_TIMEOUT)
    assert line, f"chat exited ({await proc.wait()}) before printing a line"
    return line.decode()


def test_send_prints_the_seq_and_history_prints_the_messages(shared: tuple[Daemon, str]
                                                             ) -> None:
    """`chat send` prints the new seq (TEXT "-" reads stdin, without its final newline);
    `chat history` prints one line per message (time, user, text) or JSON lines."""
    daemon, token = shared
    env = chat_env(daemon, token)
    first = run_chat("send", "general", "hello **all**", env=env)
    assert first.returncode == 0 and first.stderr == "", first
    piped = run_chat("--url", daemon.base_url, "send", "general", "-", "--token", token,
                     stdin="two\nlines\n")
    assert piped.returncode == 0, piped.stderr
    assert int(piped.stdout) == int(first.stdout) + 1
    listed = run_chat("history", "general", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[-2].endswith(" alice: hello **all**") and lines[-1].endswith(
        " alice: two\\nlines"), lines
    as_json = run_chat("history", "general", "--json", "--limit", "1", env=env)
    [message] = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert message["seq"] == int(piped.stdout) and message["text"] == "two\nlines"
    earlier = run_chat("history", "general", "--before", piped.stdout.strip(), "--json",
                       env=env)
    assert [orjson.loads(line)["text"] for line in earlier.stdout.splitlines()][-1] == (
        "hello **all**")


def test_errors_are_one_line_with_exit_status_1_or_2(shared: tuple[Daemon, str]) -> None:
    """A refused token, an unreachable server and a missing room exit 1 with one line naming
    the problem; a missing token is a usage error (2) saying how to get one."""
    daemon, token = shared
    bad = run_chat("send", "general", "hi", env=chat_env(daemon, "not-a-token"))
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1, bad
    assert "refused the token" in bad.stderr and "chatserver user token NAME" in bad.stderr
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = run_chat("--connect-timeout", "0.5", "send", "general", "hi",
                           env={"CHAT_URL": nowhere, "CHAT_TOKEN": token})
    assert unreachable.returncode == 1 and len(unreachable.stderr.splitlines()) == 1
    assert "could not connect" in unreachable.stderr and nowhere[7:] in unreachable.stderr
    missing = run_chat("history", "nosuch", env=chat_env(daemon, token))
    assert missing.returncode == 1 and "not_found" in missing.stderr, missing
    no_token = run_chat("tail", "general", env={"CHAT_URL": daemon.base_url})
    assert no_token.returncode == 2 and "chatserver user token NAME" in no_token.stderr


async def test_stream_sends_a_growing_pipe_as_one_message(shared: tuple[Daemon, str]) -> None:
    """`chat stream` sends each stdin line as it arrives (with --chunk, each read), and at
    EOF stores everything as one message and prints its seq."""
    daemon, token = shared
    async with daemon.http_session() as http:
        reader = await connect(http, daemon, token)
        await reader.join("general")
        for flags, pieces, stored in (
                ((), ["line one\n", "line two\n"], "line one\nline two"),
                (("--chunk",), ["par", "tial\n"], "partial")):
            proc = await asyncio.create_subprocess_exec(
                CHAT, "stream", "general", *flags, env={**os.environ, **chat_env(daemon, token)},
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            assert proc.stdin is not None
            stream = (await reader.recv_op("stream_start", LINE_TIMEOUT))["stream"]
            seen = ""
            for piece in pieces:
                proc.stdin.write(piece.encode())
                await proc.stdin.drain()
                # The piece reaches readers while the pipe is still open.
                delta = await reader.recv_op("stream_delta", LINE_TIMEOUT)
                assert delta["stream"] == stream
                seen += delta["text"]
            proc.stdin.close()
            out, err = await asyncio.wait_for(proc.communicate(), LINE_TIMEOUT)
            assert proc.returncode == 0, err
            final = await reader.recv_op("message", LINE_TIMEOUT)
            assert final["stream"] == stream and final["text"] == stored
            assert seen.rstrip("\n") == stored and int(out) == final["seq"]
        await reader.close()


async def test_tail_follows_across_a_restart_without_gap_or_duplicate(
        shared: tuple[Daemon, str]) -> None:
    """`chat tail --json` prints every message once in seq order — including those sent
    while it was reconnecting after the daemon restarted — and Ctrl-C exits 130 quietly."""
    daemon, token = shared
    proc = await asyncio.create_subprocess_exec(
        CHAT, "tail", "tail", "--after", "0", "--json",
        env={**os.environ, **chat_env(daemon, token)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    printed: list[dict[str, Any]] = []
    try:
        async with daemon.http_session() as http:
            writer = await connect(http, daemon, token)
            for text in ("one", "two"):
                await writer.say("tail", text)
            printed += [orjson.loads(await _line(proc)) for _ in range(2)]
            await writer.close()
        await to_thread(daemon.restart, signal.SIGTERM)  # tail sees 1001 and waits 0.5-5 s
        async with daemon.http_session() as http:
            writer = await connect(http, daemon, token)
            for text in ("three", "four"):
                await writer.say("tail", text)
            printed += [orjson.loads(await _line(proc)) for _ in range(2)]
            await writer.say("tail", "five")
            printed.append(orjson.loads(await _line(proc)))
            await writer.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), LINE_TIMEOUT)
    assert [(m["seq"], m["text"]) for m in printed] == list(
        enumerate(["one", "two", "three", "four", "five"], start=1))
    assert proc.returncode == 130 and b"Traceback" not in err, err
