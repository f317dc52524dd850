"""The `chat` console script against the real daemon: send, history, tail across a restart,
stream from a pipe, and the one-line errors with their exit statuses."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.conftest import WsClient
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
    # faulthandler: a chat that does not exit is sent SIGABRT and prints every thread's stack
    return {"CHAT_URL": daemon.base_url, "CHAT_TOKEN": token, "PYTHONFAULTHANDLER": "1"}


def _as_from_a_terminal() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python then leaves Ctrl-C
    # ignored too (POSIX: `chat tail &` must survive the terminal's ^C). A test suite started
    # that way would pass the ignoring on to chat; a user's terminal does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def spawn_chat(*args: str, env: dict[str, str], stdin: int | None = None
                     ) -> asyncio.subprocess.Process:
    """`chat ARGS` running as from a terminal, its stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        CHAT, *args, env=env, stdin=stdin, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, preexec_fn=_as_from_a_terminal)


async def _interrupt(proc: asyncio.subprocess.Process) -> bytes:
    """Ctrl-C a running `chat`; returns its stderr once it exited. One that is still running
    after LINE_TIMEOUT fails the test with its threads' stacks (faulthandler, on SIGABRT)."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), LINE_TIMEOUT)
    except TimeoutError:
        proc.send_signal(signal.SIGABRT)
        _, err = await asyncio.wait_for(proc.communicate(), LINE_TIMEOUT)
        pytest.fail(f"chat did not exit {LINE_TIMEOUT:g} s after SIGINT:\n"
                    + err.decode(errors="replace"))
    return err


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
    piped = run_chat("--url", daemon.base_url, "send", "general", "-", f"--token={token}",
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
            proc = await spawn_chat("stream", "general", *flags,
                                    env={**os.environ, **chat_env(daemon, token)},
                                    stdin=asyncio.subprocess.PIPE)
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


def test_send_in_a_thread_edit_react_and_delete(shared: tuple[Daemon, str]) -> None:
    """`send --thread` replies in a thread; `edit` (TEXT or stdin), `react` and `delete`
    print the seq of the event they stored; a `react` that changes nothing prints no seq,
    says so on stderr and exits 0. History shows the result."""
    daemon, token = shared
    env = chat_env(daemon, token)
    root = int(run_chat("send", "general", "question", env=env).stdout)
    answered = run_chat("send", "general", "answer", "--thread", str(root), env=env)
    assert answered.returncode == 0, answered.stderr
    answer = int(answered.stdout)
    edited = run_chat("edit", "general", str(root), "question v2", env=env)
    assert edited.returncode == 0 and int(edited.stdout) == answer + 1, edited
    piped = run_chat("edit", "general", str(root), "-", stdin="question v3\n", env=env)
    assert piped.returncode == 0 and int(piped.stdout) == answer + 2, piped
    reacted = run_chat("react", "general", str(root), "✅", env=env)
    assert reacted.returncode == 0 and int(reacted.stdout) == answer + 3, reacted
    again = run_chat("react", "general", str(root), "✅", env=env)
    assert (again.returncode, again.stdout) == (0, "") and "nothing changed" in again.stderr
    removed = run_chat("react", "general", str(root), "✅", "--remove", env=env)
    assert removed.returncode == 0 and int(removed.stdout) == answer + 4, removed
    assert run_chat("react", "general", str(root), ":rocket:", env=env).returncode == 0
    deleted = run_chat("delete", "general", str(answer), env=env)
    assert deleted.returncode == 0 and int(deleted.stdout) == answer + 6, deleted
    listed = run_chat("history", "general", "--json", "--limit", "2", env=env)
    question, reply = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert (question["seq"], question["text"], question["replies"]) == (root, "question v3", 1)
    assert [r["emoji"] for r in question["reactions"]] == [":rocket:"]
    assert (reply["seq"], reply["thread"], reply["deleted"]) == (answer, root, True)


def test_edit_delete_and_react_errors_exit_1_or_2(shared: tuple[Daemon, str]) -> None:
    """Someone else's message, an unknown seq, a bad emoji and an unknown thread root exit 1
    with one line naming the server's code; a seq that is not a positive number and an empty
    text are usage errors (2)."""
    daemon, token = shared
    env = chat_env(daemon, token)
    theirs = int(run_chat("send", "general", "bob's", env=chat_env(
        daemon, daemon.add_user("bob"))).stdout)
    for args, code in ((("edit", "general", str(theirs), "mine now"), "forbidden"),
                       (("delete", "general", str(theirs)), "forbidden"),
                       (("edit", "general", "99999", "x"), "not_found"),
                       (("react", "general", str(theirs), "ok"), "bad_request"),
                       (("send", "general", "x", "--thread", "99999"), "not_found")):
        failed = run_chat(*args, env=env)
        assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1, (args, failed)
        assert failed.stderr.startswith(f"chat: {code}: "), (args, failed.stderr)
    for args, stdin in ((("edit", "general", "0", "x"), ""), (("delete", "general", "x"), ""),
                        (("edit", "general", str(theirs), "-"), "\n")):
        usage = run_chat(*args, stdin=stdin, env=env)
        assert usage.returncode == 2 and "Traceback" not in usage.stderr, (args, usage)


async def _say_all(writer: WsClient, room: str, texts: list[str]) -> list[int]:
    """Send each text, waiting out the server's rate limit (10/s, burst 30) when it says so."""
    seqs = []
    for text in texts:
        while True:
            reply = await writer.request({"op": "send", "room": room, "text": text}, "ack")
            if reply["op"] == "ack":
                seqs.append(reply["seq"])
                break
            assert reply["code"] == "rate_limited", reply
            await asyncio.sleep(reply.get("retry_after", 0.1))
    return seqs


async def test_search_prints_plain_snippets_pages_past_50_and_names_errors(
        shared: tuple[Daemon, str]) -> None:
    """`chat search` prints one line per hit (room, seq, local time, user, the snippet as
    plain text: no <mark>, entities unescaped, control characters escaped) or the results as
    JSON lines; `--limit` past the server's 50 follows `next`; a bad query and a missing room
    exit 1 naming the code."""
    daemon, _ = shared
    token = daemon.add_user("searcher")
    env = chat_env(daemon, token)
    async with daemon.http_session() as http:
        writer = await connect(http, daemon, token)
        [odd] = await _say_all(writer, "general", ["a <b>zebra</b> & co\nnext \x1b[31mline"])
        bulk = await _say_all(writer, "general", [f"quagga number {i}" for i in range(53)])
        await writer.close()
    found = run_chat("search", "zebra", env=env)
    assert found.returncode == 0, found.stderr
    [line] = found.stdout.splitlines()
    assert re.fullmatch(rf"general {odd} \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d searcher: "
                        r"a <b>zebra</b> & co\\nnext \\x1b\[31mline", line), line
    [hit] = [orjson.loads(line) for line in run_chat(
        "search", "zebra", "--room", "general", "--json", env=env).stdout.splitlines()]
    assert (hit["room"], hit["seq"], hit["thread"], hit["user"]) == (
        "general", odd, None, "searcher")
    assert "<mark>zebra</mark>" in hit["snippet"] and "&amp;" in hit["snippet"]
    many = run_chat("search", "quagga", "--limit", "60", "--json", env=env)
    assert many.returncode == 0, many.stderr
    assert sorted(orjson.loads(line)["seq"] for line in many.stdout.splitlines()) == bulk
    assert len(run_chat("search", "quagga", "--limit", "52", env=env).stdout.splitlines()) == 52
    assert len(run_chat("search", "quagga", env=env).stdout.splitlines()) == 20
    assert run_chat("search", "zebra", "--room", "tail", env=env).stdout == ""
    for args, code in ((("ab*",), "bad_request"), (("zebra", "--room", "nosuch"), "not_found")):
        failed = run_chat("search", *args, env=env)
        assert failed.returncode == 1 and failed.stderr.startswith(f"chat: {code}: "), failed


async def test_tail_events_prints_edits_deletions_and_reactions(shared: tuple[Daemon, str]
                                                                 ) -> None:
    """`chat tail --events` prints every frame of the room's log as one line starting with
    its seq, events naming the message they change; with --json, each frame as sent (a
    replay shows messages and edits as they are now)."""
    daemon, token = shared
    await to_thread(daemon.cli_ok, "room", "create", "events")
    env = {**os.environ, **chat_env(daemon, token)}
    proc = await spawn_chat("tail", "events", "--events", "--after", "0", env=env)
    try:
        async with daemon.http_session() as http:
            writer = await connect(http, daemon, token)
            await writer.say("events", "ready")
            assert (await _line(proc)).endswith(" alice: ready\n")  # tail is live now
            first = (await writer.say("events", "status: \x1b[2Jbuilding"))["seq"]
            for frame in ({"op": "edit", "seq": first, "text": "status: done"},
                          {"op": "react", "seq": first, "emoji": "✅"},
                          {"op": "react", "seq": first, "emoji": "✅", "remove": True},
                          {"op": "delete", "seq": first}):
                await writer.request({**frame, "room": "events"}, "ack")
            lines = [(await _line(proc)).rstrip("\n") for _ in range(5)]
            await writer.close()
    finally:
        err = await _interrupt(proc)
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    patterns = [rf"#{first} {when} alice: status: \\x1b\[2Jbuilding",
                rf"#{first + 1} {when} alice edited #{first}: status: done",
                rf"#{first + 2} alice reacted ✅ to #{first}",
                rf"#{first + 3} alice removed ✅ from #{first}",
                rf"#{first + 4} alice deleted #{first}"]
    for pattern, line in zip(patterns, lines, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)
    assert proc.returncode == 130 and b"Traceback" not in err, err
    replayed = await spawn_chat("tail", "events", "--events", "--after", "0", "--json",
                                env=env)
    try:
        frames = [orjson.loads(await _line(replayed)) for _ in range(6)][1:]
    finally:
        await _interrupt(replayed)
    assert [(f["op"], f["seq"]) for f in frames] == [
        ("message", first), ("edited", first + 1), ("reaction", first + 2),
        ("reaction", first + 3), ("deleted", first + 4)]
    assert frames[0]["deleted"] is True and frames[1]["text"] == "" and frames[2]["added"]


async def test_tail_follows_across_a_restart_without_gap_or_duplicate(
        shared: tuple[Daemon, str]) -> None:
    """`chat tail --json` prints every message once in seq order — including those sent
    while it was reconnecting after the daemon restarted — and Ctrl-C exits 130 quietly."""
    daemon, token = shared
    proc = await spawn_chat("tail", "tail", "--after", "0", "--json",
                            env={**os.environ, **chat_env(daemon, token)})
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
        err = await _interrupt(proc)
    assert [(m["seq"], m["text"]) for m in printed] == list(
        enumerate(["one", "two", "three", "four", "five"], start=1))
    assert proc.returncode == 130 and b"Traceback" not in err, err
