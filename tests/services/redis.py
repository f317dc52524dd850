"""A throwaway Redis server started from the real binary, and the pytest fixtures built on it.

`RedisServer` has no pytest dependency (the benchmark uses it too): it runs `redis-server` on a
free 127.0.0.1 port in its own temp dir, without persistence, as a child process it owns, and
can stop, SIGKILL and restart it on the same port (to test reconnection). It never touches the
machine's own Redis on 6379.

Fixtures: `redis_server` (one server per test session) and `redis_url` (that server's URL,
emptied with FLUSHALL before each test).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

START_TIMEOUT = 15.0  # seconds; a slow 2-core CI machine starts Redis in well under one
STOP_TIMEOUT = 10.0
INSTALL_HINT = (
    "redis-server was not found: run scripts/test, which installs the Debian package "
    "`redis-server` (or install it yourself: apt-get install redis-server)"
)


class RedisServerError(RuntimeError):
    """The server could not be started (binary missing, did not answer PING, ...)."""


def _find_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    # Debian installs it in /usr/bin, which a minimal PATH (e.g. under sudo -E) may lack.
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise RedisServerError(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one RESP command and return the first reply line (enough for PING/FLUSHALL)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


class RedisServer:
    """One `redis-server` child process on 127.0.0.1:<free port>; see the module docstring."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._registered = False

    @property
    def url(self) -> str:
        if not self.port:
            raise RedisServerError("the server was never started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._dir / "redis.log" if self._dir else None

    def start(self) -> None:
        """Start the server (on the same port when restarting) and wait until it answers PING."""
        if self.running:
            return
        binary = _find_binary()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="chat-redis-"))
        if not self._registered:
            # A test run that dies between start and stop must not leave a server behind.
            atexit.register(self._cleanup_at_exit)
            self._registered = True
        fixed_port = bool(self.port)
        # A free port can be taken between probing and binding: retry with another one.
        for _attempt in range(3 if not fixed_port else 1):
            if not fixed_port:
                self.port = _free_port()
            if self._spawn(binary):
                return
        raise RedisServerError(f"redis-server did not start; its log:\n{self._log_tail()}")

    def _spawn(self, binary: str) -> bool:
        assert self._dir is not None
        # The child keeps its own copy of the descriptor; ours is closed right after spawning.
        log = open(self._dir / "redis.log", "ab")
        try:
            self._process = subprocess.Popen(
                [
                    binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                    "--dir", str(self._dir),
                    "--logfile", "",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False  # exited: port taken, bad option; the log says which
            try:
                if _command(self.port, "PING") == b"+PONG":
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RedisServerError(
            f"redis-server did not answer PING within {START_TIMEOUT:g}s; its log:\n"
            f"{self._log_tail()}"
        )

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), SIGKILL if it does not exit in time."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self._process = None

    def kill(self) -> None:
        """SIGKILL: a crash, as the clients see it (connections reset, nothing flushed)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)
        self._process = None

    def restart(self) -> None:
        """Stop, then start again on the same port (clients must reconnect by themselves)."""
        self.stop()
        self.start()

    def flushall(self) -> None:
        reply = _command(self.port, "FLUSHALL")
        if reply != b"+OK":
            raise RedisServerError(f"FLUSHALL answered {reply!r}")

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _cleanup_at_exit(self) -> None:
        self.kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def start_or_fail(server: RedisServer) -> None:
    """Start the server, turning a failure into a test failure (never a silent skip)."""
    try:
        server.start()
    except RedisServerError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway Redis server for the whole test session."""
    server = RedisServer()
    start_or_fail(server)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of this test alone, which it may stop, kill and restart."""
    server = RedisServer()
    start_or_fail(server)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, its data emptied before the test."""
    if not redis_server.running:  # a test stopped it: bring it back for the next ones
        start_or_fail(redis_server)
    redis_server.flushall()
    return redis_server.url
