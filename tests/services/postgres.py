"""A throwaway PostgreSQL server for tests and benchmarks, and the pytest fixtures that use it.

`PostgresServer` runs Debian's own binaries (`initdb`, `postgres`) on a temp data directory and a
free 127.0.0.1 port, never the machine's own PostgreSQL: a test may stop or kill -9 its server.
The class needs no pytest (the benchmark starts one too); the fixtures are at the bottom.

Durability settings: `fsync=off` and `full_page_writes=off` only give up safety against an OS
crash or power loss, which no test checks. `synchronous_commit` stays on, so a COMMIT returns
only once its WAL is written to the kernel: kill -9 of every server process keeps committed data,
which is exactly what the durability tests check (with `synchronous_commit=off` WAL may sit in
shared memory for up to 200 ms after the commit returned and die with the processes).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

READY_TIMEOUT = 30.0  # seconds for the server to accept connections after a (re)start
STOP_TIMEOUT = 30.0  # seconds a fast shutdown may take before the server is killed

_INSTALL_HINT = (
    "run scripts/test, which installs Debian's `postgresql` package (or `apt-get install "
    "postgresql`, or point CHATSERVER_PG_BIN at a directory holding initdb and postgres)"
)
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresBinariesMissing(RuntimeError):
    """No `initdb`/`postgres` binaries were found; the message says how to install them."""


class PostgresStartError(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


def find_bin_dir() -> Path:
    """The directory holding `initdb`, `postgres`, `pg_isready` and `psql`.

    `$CHATSERVER_PG_BIN` wins; then the newest /usr/lib/postgresql/N/bin (Debian's layout,
    which does not put the server binaries on PATH); then PATH.
    """
    candidates: list[Path] = []
    if os.environ.get("CHATSERVER_PG_BIN"):
        candidates.append(Path(os.environ["CHATSERVER_PG_BIN"]))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates.extend(p / "bin" for p in sorted(versions, key=lambda p: -int(p.name)))
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all(os.access(directory / n, os.X_OK) for n in ("initdb", "postgres", "pg_isready")):
            return directory
    raise PostgresBinariesMissing(f"no PostgreSQL server binaries found: {_INSTALL_HINT}")


def _free_port() -> int:
    # The port is free now; a race with another process binding it is caught in start().
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client_env() -> dict[str, str]:
    # Our own PG* variables (a developer's PGHOST, PGSSLMODE...) must not redirect the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    return env


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


class PostgresServer:
    """One private PostgreSQL cluster: `start()`, `stop()`, `kill()`, `freeze()`, `restart()`...

    Trust authentication for local TCP connections as user `postgres`; listens on 127.0.0.1
    only, plus a unix socket inside its own temp dir. Usable as a context manager (start on
    enter, `close()` on exit). `close()` ends every process and removes the data; it is also
    registered with atexit, so an interpreter that exits without it leaves no server behind.
    """

    def __init__(self, *, ready_timeout: float = READY_TIMEOUT) -> None:
        self._ready_timeout = ready_timeout
        self._bin: Path | None = None
        self._root: Path | None = None  # temp dir: data/, sock/, server.log
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen: list[int] = []  # pids freeze() stopped
        self._as_postgres = os.geteuid() == 0

    # -- where it is -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def dsn(self) -> str:
        """The `postgres` maintenance database; tests use `create_database()` instead."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def data_dir(self) -> Path:
        if self._root is None:
            raise RuntimeError("the server has not been started")
        return self._root / "data"

    def log_text(self, tail: int = 4000) -> str:
        """The last `tail` characters of the server's log (initdb's output included)."""
        if self._root is None:
            return ""
        try:
            return (self._root / "server.log").read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it answers.

        Raises `PostgresBinariesMissing` without the binaries and `PostgresStartError` (with the
        log) when the server does not come up within the ready timeout; on any error every
        process this call started is ended.
        """
        if self.running:
            raise RuntimeError("the server is already running")
        if self._bin is None:
            self._bin = find_bin_dir()
        if self._root is None:
            self._create_cluster()
            atexit.register(self.close)
        if self._port is not None:
            self._launch(self._port)  # restart: same port, same data
            return
        log_path = self.data_dir.parent / "server.log"
        for attempt in range(5):
            port = _free_port()
            log_size = log_path.stat().st_size
            try:
                self._launch(port)
            except PostgresStartError:
                # Another process may have taken the port between our probe and the bind.
                with open(log_path, "rb") as log:
                    log.seek(log_size)
                    taken = b"could not bind" in log.read()
                if attempt == 4 or not taken:
                    raise
                continue
            self._port = port
            return

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, committed data kept. Idempotent."""
        if self._proc is None:
            return
        self.thaw()
        pid = self._postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started, as a crash would. Idempotent.

        The children die too (not only on noticing their parent's death) so a `restart()` at
        once never meets a backend still attached to the old shared memory.
        """
        if self._proc is None:
            return
        # SIGKILL ends stopped processes too, without letting them run on; runuser, stopped
        # with its child by freeze(), must run again to reap it.
        frozen, self._frozen = self._frozen, []
        pid = self._postmaster_pid()
        if pid is None:  # not started far enough to write postmaster.pid
            pid = self._proc.pid
            victims = [pid, *_children(pid)] if self._as_postgres else [pid]
        else:
            victims = [pid]
        victims += [child for victim in victims for child in _children(victim)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        if frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGCONT)
        try:
            # runuser exits once it has reaped the postmaster; killed first, it would leave a
            # postmaster zombie whose pid in postmaster.pid blocks the next start.
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        deadline = time.monotonic() + 10
        while any(_pid_alive(v) for v in victims) and time.monotonic() < deadline:
            time.sleep(0.01)

    def freeze(self) -> None:
        """SIGSTOP every server process: connections stay open and nothing answers, like a hung
        host or a network that drops packets. `thaw()` resumes; `stop()` and `kill()` thaw."""
        pid = self._postmaster_pid()
        if pid is None or self._frozen:
            return
        os.kill(pid, signal.SIGSTOP)  # first, so it forks no child we would miss
        self._frozen = [pid, *_children(pid)]
        for child in self._frozen[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume the processes `freeze()` stopped. Idempotent."""
        frozen, self._frozen = self._frozen, []
        if frozen and self._proc is not None:
            # runuser stops itself when its child stops (job control) and would never reap it.
            frozen.append(self._proc.pid)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def restart(self) -> None:
        """Stop (fast) if running, then start again on the same port and data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its data. Idempotent."""
        try:
            self.stop()
        finally:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None
            atexit.unregister(self.close)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- databases ---------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create an empty database owned by `postgres`; return its DSN."""
        self._psql(f'CREATE DATABASE "{self._checked(name)}"')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop the database, disconnecting whoever is still connected to it."""
        self._psql(f'DROP DATABASE IF EXISTS "{self._checked(name)}" WITH (FORCE)')

    @staticmethod
    def _checked(name: str) -> str:
        if not _DATABASE_NAME.match(name):
            raise ValueError(f"database names here are lowercase identifiers, got {name!r}")
        return name

    def _psql(self, sql: str) -> None:
        assert self._bin is not None
        result = subprocess.run(
            [
                str(self._bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                "-c", sql,
            ],
            env=_client_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr.strip()}")

    # -- plumbing ----------------------------------------------------------------------------

    def _as_server_user(self, argv: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root.
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else argv

    def _create_cluster(self) -> None:
        assert self._bin is not None
        root = Path(tempfile.mkdtemp(prefix="chatserver-pg-"))
        try:
            (root / "sock").mkdir()
            if self._as_postgres:
                for path in (root, root / "sock"):
                    shutil.chown(path, "postgres", "postgres")
            with open(root / "server.log", "ab") as log:
                if self._as_postgres:
                    shutil.chown(root / "server.log", "postgres", "postgres")
                initdb = self._as_server_user(
                    [
                        str(self._bin / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                        "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
                        "--no-instructions",
                    ]
                )
                # cwd: initdb as `postgres` cannot even stat root's working directory.
                subprocess.run(
                    initdb, stdout=log, stderr=subprocess.STDOUT, cwd=root, check=True,
                    timeout=120,
                )
        except subprocess.CalledProcessError:
            log_text = (root / "server.log").read_text(errors="replace")[-4000:]
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresStartError(f"initdb failed:\n{log_text}") from None
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        self._root = root

    def _launch(self, port: int) -> None:
        assert self._bin is not None and self._root is not None
        argv = self._as_server_user(
            [
                str(self._bin / "postgres"), "-D", str(self._root / "data"), "-p", str(port),
                "-k", str(self._root / "sock"),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off",
                "-c", "full_page_writes=off",
                "-c", "max_connections=300",
                "-c", "logging_collector=off",
            ]
        )
        with open(self._root / "server.log", "ab") as log:
            # Its own session: a Ctrl-C meant for pytest must not shut the server down under a
            # test; close() (atexit included) does that.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self._root, start_new_session=True,
            )
        try:
            self._wait_ready(port)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, port: int) -> None:
        assert self._bin is not None and self._proc is not None
        deadline = time.monotonic() + self._ready_timeout
        while True:
            if self._proc.poll() is not None:
                raise PostgresStartError(
                    f"postgres exited with status {self._proc.returncode} while starting:\n"
                    f"{self.log_text()}"
                )
            # pg_isready makes a real connection attempt: it says yes only once the server
            # accepts sessions, not while it is still starting up or recovering.
            probe = subprocess.run(
                [
                    str(self._bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port),
                    "-U", "postgres", "-d", "postgres", "-t", "1",
                ],
                env=_client_env(),
                check=False,
            )
            if probe.returncode == 0 and self._postmaster_pid() is not None:
                return
            if time.monotonic() > deadline:
                raise PostgresStartError(
                    f"postgres did not accept connections within {self._ready_timeout:g} s:\n"
                    f"{self.log_text()}"
                )
            time.sleep(0.05)

    def _postmaster_pid(self) -> int | None:
        # With runuser in between, Popen's pid is runuser's; the postmaster writes its own.
        if self._root is None:
            return None
        try:
            first = (self._root / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None


# -- pytest fixtures ---------------------------------------------------------------------------


def start_or_fail(server: PostgresServer) -> None:
    """Start `server`; without the binaries the test FAILS (never skips) saying what to run."""
    try:
        server.start()
    except PostgresBinariesMissing as exc:
        server.close()
        pytest.fail(str(exc), pytrace=False)
    except BaseException:
        server.close()
        raise


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole session. Never stop or kill it."""
    server = PostgresServer()
    start_or_fail(server)
    try:
        yield server
    finally:
        server.close()


_databases = iter(range(1, 1 << 62))


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a fresh, empty database on the session server, dropped after the test."""
    name = f"test_{os.getpid()}_{next(_databases)}"
    dsn = postgres_server.create_database(name)
    try:
        yield dsn
    finally:
        if postgres_server.running:
            postgres_server.drop_database(name)


@pytest.fixture
def private_postgres_server() -> Iterator[PostgresServer]:
    """A server of the test's own (about 0.5 s to create), free to be stopped and killed."""
    server = PostgresServer()
    start_or_fail(server)
    try:
        yield server
    finally:
        server.close()
