"""systemd life with a fake NOTIFY_SOCKET: READY=1, WATCHDOG=1 from the event loop (so a
stuck loop stops it), STATUS, STOPPING=1 — for one process and for supervised workers."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.services.redis import RedisServer
from tests.system.daemon import Daemon

pytestmark = pytest.mark.system


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: collects what the daemon tells systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)

    def drain(self, seconds: float) -> list[str]:
        """Every notification that arrives within `seconds`."""
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return got

    def wait_for(self, prefix: str, timeout: float = 20) -> list[str]:
        got, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            got.append(message)
            if message.startswith(prefix):
                return got
        raise AssertionError(f"no {prefix!r} notification within {timeout} s; got {got}")


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.sock.close()


def _watchdogs(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith("WATCHDOG=1")]


def test_single_process_pings_the_watchdog_from_its_loop(tmp_path: Path,
                                                         systemd: FakeSystemd) -> None:
    """READY=1 once listening; WATCHDOG=1 with STATUS while the loop runs, none while the
    process is frozen; STOPPING=1 on SIGTERM, then exit 0."""
    daemon = Daemon(tmp_path)
    daemon.env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}
    try:
        daemon.start()
        systemd.wait_for("READY=1")
        alive = _watchdogs(systemd.drain(1.5))
        assert len(alive) >= 3 and "STATUS=0 connections" in alive[0]
        daemon.kill(signal.SIGSTOP)  # a stuck event loop, as far as systemd can tell
        systemd.drain(0.3)  # anything already sent before the stop
        assert _watchdogs(systemd.drain(1.5)) == []
        daemon.kill(signal.SIGCONT)
        assert _watchdogs(systemd.drain(1.5))
        daemon.kill(signal.SIGTERM)
        systemd.wait_for("STOPPING=1")
        assert daemon.wait(20) == 0
    finally:
        daemon.stop()


def test_supervisor_relays_the_watchdog_only_while_every_worker_reports(
        tmp_path: Path, systemd: FakeSystemd) -> None:
    """With two workers, READY=1 comes once both listen and WATCHDOG=1 is relayed while both
    loops report; a frozen worker stops the relay."""
    with RedisServer() as redis:
        daemon = Daemon(tmp_path, extra_config=f'[broker]\nbackend = "redis"\n'
                                               f'url = "{redis.url}"\n')
        text = daemon.config_path.read_text()
        daemon.config_path.write_text(text.replace(f"port = {daemon.port}\n",
                                                   f"port = {daemon.port}\nprocesses = 2\n"))
        daemon.env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "600000"}
        try:
            daemon.start()
            systemd.wait_for("READY=1")
            assert _watchdogs(systemd.drain(1.5))
            workers = psutil.Process(daemon.pid).children()
            assert len(workers) >= 2
            workers[0].suspend()
            systemd.drain(6.0)  # the worker goes stale after supervisor.WORKER_FRESH
            assert _watchdogs(systemd.drain(1.5)) == []
            workers[0].resume()
            systemd.drain(1.5)
            assert _watchdogs(systemd.drain(1.5))
            daemon.kill(signal.SIGTERM)
            systemd.wait_for("STOPPING=1")
            assert daemon.wait(30) == 0
        finally:
            daemon.stop()


def test_sighup_reloads_limits_and_keeps_serving(tmp_path: Path) -> None:
    """SIGHUP re-reads the file: a changed [limits] applies, the process keeps serving, and a
    broken file is refused with a log line while the old configuration stays."""
    daemon = Daemon(tmp_path)
    try:
        daemon.start()
        original = daemon.config_path.read_text()
        daemon.config_path.write_text(original.replace("burst = 1000", "burst = 7"))
        daemon.kill(signal.SIGHUP)
        _wait_for_log(daemon, "configuration reloaded")
        daemon.config_path.write_text(original + "[nonsense]\n")
        daemon.kill(signal.SIGHUP)
        _wait_for_log(daemon, "configuration not reloaded")
        daemon.wait_healthy(10)
        daemon.kill(signal.SIGTERM)
        assert daemon.wait(20) == 0
    finally:
        daemon.stop()


def _wait_for_log(daemon: Daemon, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.stderr():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{daemon.stderr()}"
        time.sleep(0.05)
