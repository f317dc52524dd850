"""`[server] processes = N`: N worker processes serving one port, joined through the broker.

The supervisor forks the workers before any event loop or thread exists (forking a process
with a running loop is unsafe), so it stays a small synchronous process: it forwards SIGTERM,
SIGINT and SIGHUP (reload) to the workers, restarts a worker that dies unexpectedly (with a backoff,
giving up on one that keeps crashing), and speaks to systemd for the group: READY=1 once every
worker listens, WATCHDOG=1 only while every worker's event loop reports in (each worker writes
a heartbeat byte to its pipe from a task on its loop), STOPPING=1 on SIGTERM. A worker whose
loop has not reported for `WORKER_HUNG` seconds is killed and restarted. Each worker binds
the port with SO_REUSEPORT, so the kernel spreads new connections across them.

A scrape of /metrics lands on any worker and must cover them all: the supervisor makes a
private directory where each worker answers the others' scrapes on a Unix socket
(`chatserver.metrics.WorkerSet`), and removes it when it exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from chatserver import daemon
from chatserver.config import Config
from chatserver.daemon import sd_notify
from chatserver.metrics import WorkerSet

log = logging.getLogger(__name__)

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
CRASH_WINDOW = 60.0  # seconds: this many crashes in the window and the worker is given up
MAX_CRASHES = len(RESTART_BACKOFF)
POLL = 0.1
HEARTBEAT = 1.0  # seconds between a worker's heartbeats
WORKER_FRESH = 5.0  # a worker heard from this recently counts as alive for WATCHDOG=1
WORKER_HUNG = 30.0  # a worker silent this long has a stuck loop: kill and restart it
UNIX_PATH_MAX = 108  # bytes in sun_path, the terminating NUL included (Linux)


@dataclass
class _Worker:
    slot: int
    pid: int = 0
    pipe: int | None = None  # read end: "R" once listening, then "A" per heartbeat
    last_heard: float = 0.0
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None


class PipeNotifier:
    """A worker's `daemon.Notifier`: readiness and heartbeats go to the supervisor's pipe."""

    interval = HEARTBEAT

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def _write(self, byte: bytes) -> None:
        try:
            os.write(self.fd, byte)
        except (BlockingIOError, BrokenPipeError):
            pass  # a full pipe already says "alive"; a broken one means no supervisor

    def ready(self) -> None:
        self._write(b"R")

    def alive(self, status: str) -> None:
        self._write(b"A")

    def stopping(self) -> None:
        return None


def _run_worker(config: Config, pipe_fd: int, workers: WorkerSet) -> int:
    """In the forked child: serve, reporting to the supervisor through `pipe_fd`."""
    return daemon.run(config, PipeNotifier(pipe_fd), workers)


def _metrics_directory() -> str:
    """A private (0700) directory for the workers' metrics sockets: under systemd's
    RuntimeDirectory when the unit sets one, else under the temp directory."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    made = tempfile.mkdtemp(prefix="chatserver-metrics-", dir=runtime or None)
    if len(os.path.join(made, "worker-999.sock")) < UNIX_PATH_MAX:
        return made
    # A socket path must fit sun_path (108 bytes on Linux): a deep RUNTIME_DIRECTORY would
    # leave every worker's /metrics without the others'.
    os.rmdir(made)
    log.warning("RUNTIME_DIRECTORY %s is too deep for the workers' metrics sockets; using "
                "the temporary directory instead", runtime)
    return tempfile.mkdtemp(prefix="chatserver-metrics-")


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.workers = [_Worker(slot) for slot in range(config.server.processes)]
        self._stopping = False
        self._signal: int | None = None
        self._metrics_dir = ""  # made in run(): where the workers answer each other's scrapes

    def _spawn(self, worker: _Worker) -> int:
        """Fork one worker; returns the read end of its readiness pipe."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_fd)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = _run_worker(self.config, write_fd, WorkerSet(
                    self._metrics_dir, worker.slot, len(self.workers)))
            except BaseException:
                log.exception("worker %d failed", worker.slot)
            finally:
                os._exit(code)
        os.close(write_fd)
        worker.pid = pid
        worker.pipe = read_fd
        worker.last_heard = time.monotonic()
        worker.restart_at = None
        log.info("worker %d started (pid %d)", worker.slot, pid)
        return read_fd

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signal = signum

    def _migrate_once(self) -> bool:
        """Apply migrations before the workers start, so they do not race to (every worker
        opening the store at once raced on SQLite's first migration). A child process does
        it: the supervisor must fork its workers with no event loop or thread of its own."""
        result = subprocess.run(
            [sys.executable, "-m", "chatserver", "--config", self.config.source, "migrate"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, check=False)
        if result.returncode != 0:
            log.error("migrating the store failed: %s", result.stderr.strip()[-2000:])
        return result.returncode == 0

    def run(self) -> int:
        if not self._migrate_once():
            return 1
        self._metrics_dir = _metrics_directory()
        try:
            return self._run()
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        pipes = [self._spawn(worker) for worker in self.workers]
        self._watchdog = daemon.watchdog_interval()
        self._last_watchdog = 0.0
        if not self._await_ready(pipes):
            log.error("not every worker started; stopping the others")
            self._signal_all(signal.SIGTERM)
            self._reap_all()
            return 1
        log.info("%d workers listening on %s:%d", len(self.workers), self.config.server.host,
                 self.config.server.port)
        sd_notify(f"READY=1\nSTATUS={len(self.workers)} workers\nMAINPID={os.getpid()}")
        return self._supervise()

    def _await_ready(self, pipes: list[int]) -> bool:
        """Wait until each worker wrote its ready byte; False if one exited first."""
        ready = 0
        for fd in pipes:
            data = os.read(fd, 1)  # blocks until written, or EOF when the child exits
            os.set_blocking(fd, False)
            ready += data == b"R"
        return ready == len(pipes)

    def _listen(self) -> None:
        """Drain every worker's pipe; note who was heard from; stop a hung worker."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.pipe is not None:
                try:
                    data = os.read(worker.pipe, 4096)
                except BlockingIOError:
                    data = None
                if data:
                    worker.last_heard = now
                elif data == b"":  # EOF: the worker exited; the reaper handles it
                    os.close(worker.pipe)
                    worker.pipe = None
            if worker.pid and now - worker.last_heard > WORKER_HUNG:
                log.error("worker %d (pid %d) has not reported for %.0f s: its event loop is "
                          "stuck; killing it", worker.slot, worker.pid, now - worker.last_heard)
                os.kill(worker.pid, signal.SIGKILL)
                worker.last_heard = now  # once; the reaper restarts it
        if self._watchdog is not None and now - self._last_watchdog >= self._watchdog:
            live = [w for w in self.workers if w.pid]
            if live and all(now - w.last_heard <= WORKER_FRESH for w in live):
                sd_notify(f"WATCHDOG=1\nSTATUS={len(live)} workers")
                self._last_watchdog = now

    def _supervise(self) -> int:
        while True:
            if self._signal == signal.SIGHUP:
                self._signal = None
                self._signal_all(signal.SIGHUP)  # each worker reloads its configuration
            elif self._signal is not None:
                sd_notify("STOPPING=1")
                self._stopping = True
                self._signal_all(signal.SIGTERM)
                return 1 if self._reap_all() else 0
            self._listen()
            self._reap_exited()
            self._restart_due()
            if all(w.pid == 0 and w.restart_at is None for w in self.workers):
                log.error("every worker has failed; exiting")
                return 1
            time.sleep(POLL)

    def _reap_exited(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is None:
                continue
            worker.pid = 0
            if worker.pipe is not None:
                os.close(worker.pipe)
                worker.pipe = None
            code = os.waitstatus_to_exitcode(status)
            now = time.monotonic()
            worker.crashes = [t for t in worker.crashes if now - t < CRASH_WINDOW] + [now]
            if len(worker.crashes) > MAX_CRASHES:
                log.error("worker %d exited with %d and keeps crashing; not restarting it",
                          worker.slot, code)
                continue
            delay = RESTART_BACKOFF[len(worker.crashes) - 1]
            log.error("worker %d (pid %d) exited with %d; restarting in %.1f s", worker.slot,
                      pid, code, delay)
            worker.restart_at = now + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None and now >= worker.restart_at:
                os.set_blocking(self._spawn(worker), False)  # its heartbeats are listened to

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.pid:
                try:
                    os.kill(worker.pid, sig)
                except ProcessLookupError:
                    pass

    def _reap_all(self) -> int:
        """Wait for every worker; the number that did not exit 0."""
        failures = 0
        deadline = time.monotonic() + self.config.server.shutdown_timeout + 5
        for worker in self.workers:
            if not worker.pid:
                continue
            while True:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
                if pid:
                    failures += os.waitstatus_to_exitcode(status) != 0
                    break
                if time.monotonic() > deadline:
                    log.error("worker %d did not stop in time; killing it", worker.slot)
                    os.kill(worker.pid, signal.SIGKILL)
                    os.waitpid(worker.pid, 0)
                    failures += 1
                    break
                time.sleep(POLL)
            worker.pid = 0
        return failures


def run(config: Config) -> int:
    return Supervisor(config).run()
