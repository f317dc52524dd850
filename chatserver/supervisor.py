"""`[server] processes = N`: N worker processes serving one port, joined through the broker.

The supervisor forks the workers before any event loop or thread exists (forking a process
with a running loop is unsafe), so it stays a small synchronous process: it forwards SIGTERM
and SIGINT to the workers, restarts a worker that dies unexpectedly (with a backoff,
giving up on one that keeps crashing), and speaks to systemd for the group: READY=1 once every
worker listens, STOPPING=1 on SIGTERM. Each worker binds the port with SO_REUSEPORT, so the
kernel spreads new connections across them.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field

from chatserver import daemon
from chatserver.config import Config
from chatserver.daemon import sd_notify

log = logging.getLogger(__name__)

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
CRASH_WINDOW = 60.0  # seconds: this many crashes in the window and the worker is given up
MAX_CRASHES = len(RESTART_BACKOFF)
POLL = 0.1


@dataclass
class _Worker:
    slot: int
    pid: int = 0
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None


def _run_worker(config: Config, ready_fd: int) -> int:
    """In the forked child: serve, telling the supervisor through `ready_fd` once listening."""

    def ready() -> None:
        os.write(ready_fd, b"R")
        os.close(ready_fd)

    return daemon.run(config, on_ready=ready)


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.workers = [_Worker(slot) for slot in range(config.server.processes)]
        self._stopping = False
        self._signal: int | None = None

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
                code = _run_worker(self.config, write_fd)
            except BaseException:
                log.exception("worker %d failed", worker.slot)
            finally:
                os._exit(code)
        os.close(write_fd)
        worker.pid = pid
        worker.restart_at = None
        log.info("worker %d started (pid %d)", worker.slot, pid)
        return read_fd

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signal = signum

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # see daemon.serve
        pipes = [self._spawn(worker) for worker in self.workers]
        if not self._await_ready(pipes):
            log.error("not every worker started; stopping the others")
            self._stop_all(signal.SIGTERM)
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
            try:
                data = os.read(fd, 1)  # blocks until written, or EOF when the child exits
            finally:
                os.close(fd)
            ready += data == b"R"
        return ready == len(pipes)

    def _supervise(self) -> int:
        while True:
            if self._signal is not None:
                sd_notify("STOPPING=1")
                self._stopping = True
                self._stop_all(signal.SIGTERM)
                return 1 if self._reap_all() else 0
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
                os.close(self._spawn(worker))  # readiness of a restart is not waited for

    def _stop_all(self, sig: int) -> None:
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
