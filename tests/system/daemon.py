"""Run the real `chatserver` daemon as a subprocess, and its admin CLI, for system tests.

The daemon runs in a session of its own, so its helper processes (the forkserver and the
Markdown pool workers) are one process group: `stop()` ends the whole group by its id, which
matters after a `kill -9`, when those helpers are orphaned and would otherwise live on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.integration.conftest import FRAME_TIMEOUT, WsClient

START_TIMEOUT = 20.0  # seconds for /healthz to answer 200 after the process starts
CLI_TIMEOUT = 30.0
EX_CONFIG = 78


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def config_text(port: int, db_path: Path, extra: str = "") -> str:
    """The system tests' TOML: a free port, SQLite in tmp_path, a rate limit out of the way."""
    return (
        "[server]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        "[store]\n"
        f"path = {orjson.dumps(str(db_path)).decode()}\n"
        "[limits.rate]\n"
        "per_second = 1000\n"
        "burst = 1000\n"
        "[pools]\n"
        "processes = 1\n"
        "[log]\n"
        'level = "info"\n'
        + extra
    )


def chatserver_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatserver", *args]


def run_cli(args: Sequence[str], *, stdin: str | None = "", cwd: Path | None = None,
            timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `python -m chatserver ARGS` to completion. `stdin` is piped in; None is
    `< /dev/null` (either way not a tty)."""
    if stdin is None:
        return subprocess.run(chatserver_command(*args), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return subprocess.run(chatserver_command(*args), input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


class Daemon:
    """One chatserver daemon under test: config and database in `directory`, a fixed port.

    `extra_config` is TOML appended to the file: whole tables (`[limits]`, ...) other than
    those the file already has (`[server]`, `[store]`, `[limits.rate]`, `[pools]`, `[log]`).

    `start()` waits for `GET /healthz` to answer 200; `kill(sig)` sends a signal; `restart()`
    starts it again on the same port and database. Each run's stderr goes to its own file
    (`stderr_path(run)`, stdout likewise); `stderr()` reads the current run's.
    """

    def __init__(self, directory: Path, *, extra_config: str = "",
                 argv: Sequence[str] | None = None, port: int | None = None) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.db_path = directory / "chat.db"
        self.config_path = directory / "chatserver.toml"
        self.config_path.write_text(config_text(self.port, self.db_path, extra_config))
        self.argv = list(argv) if argv is not None else ["--config", str(self.config_path)]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}  # extra environment for the daemon (e.g. NOTIFY_SOCKET)
        self.runs = 0
        self._groups: list[int] = []

    # -- the process -----------------------------------------------------------------------

    def stderr_path(self, run: int | None = None) -> Path:
        return self.directory / f"daemon-{run if run is not None else self.runs}.stderr"

    def stdout_path(self, run: int | None = None) -> Path:
        return self.directory / f"daemon-{run if run is not None else self.runs}.stdout"

    def stderr(self, run: int | None = None) -> str:
        path = self.stderr_path(run)
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the daemon and wait until /healthz answers 200 (or fail with its stderr)."""
        assert self.proc is None or self.proc.poll() is not None, "the daemon is running"
        self.runs += 1
        # The child gets its own copies of the descriptors; ours close at once.
        with open(self.stdout_path(), "wb") as stdout, open(self.stderr_path(), "wb") as stderr:
            self.proc = subprocess.Popen(
                chatserver_command(*self.argv), cwd=self.directory, stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=stderr, start_new_session=True,
                env={**os.environ, **self.env})
        self._groups.append(self.proc.pid)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"chatserver exited with status {self.proc.returncode} before /healthz "
                    f"answered; its stderr:\n{self.stderr()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        return
                    last = f"status {reply.status}"
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise AssertionError(f"/healthz did not answer 200 within {timeout} s ({last}); "
                             f"chatserver stderr:\n{self.stderr()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the daemon process (only the main process, as systemd's kill would)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the daemon to exit; its exit status (-N for signal N)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def restart(self, sig: int = signal.SIGKILL, timeout: float = START_TIMEOUT) -> None:
        """Stop the daemon with `sig` if it runs (and its helpers), then start it again."""
        if self.running():
            self.kill(sig)
            self.wait(30)
        self._kill_groups()
        self.start(timeout)

    def stop(self) -> None:
        """Stop everything this daemon started: SIGTERM, then SIGKILL to its process group."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._kill_groups()

    def _kill_groups(self) -> None:
        # Each run is the leader of its own process group (start_new_session): this ends its
        # forkserver and pool workers, which a kill -9 of the leader leaves behind.
        for group in self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        self._groups.clear()

    # -- the admin CLI, on the same config -------------------------------------------------

    def cli(self, *args: str, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
        return run_cli(["--config", str(self.config_path), *args], stdin=stdin,
                       cwd=self.directory)

    def cli_ok(self, *args: str, stdin: str | None = "") -> str:
        """Run an admin command that must succeed; its stdout."""
        done = self.cli(*args, stdin=stdin)
        assert done.returncode == 0, (
            f"chatserver {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def add_user(self, name: str, password: str = "", *, admin: bool = False) -> str:
        """`user add NAME` then `user token NAME`; the API token."""
        flags = ("--admin",) if admin else ()
        self.cli_ok("user", "add", name, *flags, stdin=password + "\n" if password else None)
        return self.token(name)

    def token(self, name: str) -> str:
        token = self.cli_ok("user", "token", name).strip()
        assert token and "\n" not in token, f"'user token' printed more than a token: {token!r}"
        return token

    def add_users(self, *names: str) -> dict[str, str]:
        """Several users at once (each CLI call is a Python start-up); name -> token."""
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return dict(zip(names, pool.map(self.add_user, names), strict=True))

    # -- talking to it ---------------------------------------------------------------------

    def http_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.base_url, timeout=aiohttp.ClientTimeout(total=30))

    async def history(self, session: aiohttp.ClientSession, token: str, room: str
                      ) -> list[dict[str, Any]]:
        """Every stored message of `room`, paged over HTTP with after=<last seq>&limit=200."""
        messages: list[dict[str, Any]] = []
        after = 0
        while True:
            async with session.get(f"/api/rooms/{room}/messages",
                                   params={"after": str(after), "limit": "200"},
                                   headers=bearer(token)) as reply:
                assert reply.status == 200, f"history: {reply.status} {await reply.text()}"
                page = await reply.json()
            messages.extend(page["messages"])
            if not page["more"]:
                return messages
            assert page["messages"], "history said 'more' but returned an empty page"
            after = page["messages"][-1]["seq"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# A daemon just started on a busy machine (the browser tests' chromium in the other worker)
# may refuse upgrades with 503 while its event loop lags (admission control, docs/protocol.md
# "Overload"); a client is expected to come back, as the Python client and the UI do.
OVERLOADED_RETRY_S = 15.0


async def connect(session: aiohttp.ClientSession, daemon: Daemon, token: str) -> WsClient:
    """Open a WebSocket to the daemon with a bearer token; the `hello` is already read.
    A 503 (overloaded) is retried for a while."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OVERLOADED_RETRY_S
    while True:
        try:
            ws = await session.ws_connect(daemon.ws_url, headers=bearer(token), autoping=True)
            break
        except aiohttp.WSServerHandshakeError as refused:
            if refused.status != 503 or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)
    msg = await asyncio.wait_for(ws.receive(), FRAME_TIMEOUT)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected hello, got {msg.type!r} {msg.data!r}"
    hello = orjson.loads(msg.data)
    assert hello["op"] == "hello", hello
    return WsClient(ws, hello)


async def to_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking daemon helper (start, restart, CLI) without blocking the test's loop."""
    return await asyncio.to_thread(fn, *args)


@dataclasses.dataclass
class PipelinedSender:
    """One client sending `count` messages to `room` with up to `window` in flight: it never
    waits for an ack before the next send. It records what it sent, every ack, error and
    message frame it got, and the close code that ended the connection."""

    name: str
    ws: aiohttp.ClientWebSocketResponse
    room: str
    count: int
    window_size: int = 30
    frame_timeout: float = 15.0
    markdown_every: int = 7  # every Nth text has Markdown, rendered in the process pool
    sent: dict[str, str] = dataclasses.field(default_factory=dict)  # ref -> text
    acks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # ref -> ack
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seen: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # message frames
    close_code: int | None = None
    closed: bool = False

    def __post_init__(self) -> None:
        self.window = asyncio.Semaphore(self.window_size)

    def text(self, i: int) -> str:
        # Plain text is rendered inline; Markdown goes to the process pool.
        if i % self.markdown_every == 0:
            return f"**{self.name}** number {i}"
        return f"{self.name} number {i}"

    async def write(self) -> None:
        for i in range(self.count):
            await self.window.acquire()
            if self.closed:
                return
            ref = f"{self.name}-{i}"
            text = self.text(i)
            frame = {"op": "send", "room": self.room, "text": text, "ref": ref}
            try:
                await self.ws.send_str(orjson.dumps(frame).decode())
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                return  # the server is gone: this one may or may not have been received
            self.sent[ref] = text

    async def read(self, on_ack: Callable[[], None] = lambda: None) -> None:
        try:
            while True:
                msg = await asyncio.wait_for(self.ws.receive(), self.frame_timeout)
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    self.close_code = msg.data
                    return
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    self.close_code = self.ws.close_code
                    return
                frame = orjson.loads(msg.data)
                if frame["op"] == "ack":
                    self.acks[frame["ref"]] = frame
                    self.window.release()
                    on_ack()
                elif frame["op"] == "error":
                    self.errors.append(frame)
                    self.window.release()
                elif frame["op"] == "message" and frame["room"] == self.room:
                    self.seen.append(frame)
        finally:
            self.closed = True
            for _ in range(self.window_size + 1):  # wake the writer so it sees `closed`
                self.window.release()

    async def run(self, on_ack: Callable[[], None] = lambda: None) -> None:
        await asyncio.gather(self.write(), self.read(on_ack))


def check_history(history: list[dict[str, Any]], senders: Sequence[PipelinedSender]) -> None:
    """History is gap-free from seq 1, holds nothing twice and nothing nobody sent, and holds
    every acked message with the ack's id and seq."""
    assert [m["seq"] for m in history] == list(range(1, len(history) + 1)), "seqs have a gap"
    assert len({m["id"] for m in history}) == len(history), "an id is stored twice"
    texts = [m["text"] for m in history]
    assert len(set(texts)) == len(texts), "a message is stored twice"
    sent = {text for s in senders for text in s.sent.values()}
    assert set(texts) <= sent, f"history holds messages nobody sent: {set(texts) - sent}"
    by_id = {m["id"]: m for m in history}
    for s in senders:
        for ref, ack in s.acks.items():
            stored = by_id.get(ack["id"])
            assert stored is not None, f"acked message {ack} is missing from history"
            assert (stored["seq"], stored["text"]) == (ack["seq"], s.sent[ref]), (stored, ack)
