"""Run the server: uvloop, listen, notify systemd, and shut down cleanly on SIGTERM/SIGINT.

Shutdown order (aiohttp's runner does the steps in this order): stop accepting; `on_shutdown`
lets sends in flight finish and closes every socket with 1001 after its queued frames; then
`cleanup_ctx` closes the store, which commits every write already submitted; exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from typing import Protocol

import uvloop
from aiohttp import web

from chatserver.app import create_app
from chatserver.app_keys import CONTEXT
from chatserver.config import Config
from chatserver.metrics import WorkerSet
from chatserver.reload import reload

log = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0  # seconds between STATUS= updates when systemd set no watchdog
LISTEN_BACKLOG = 4096  # connections waiting to be accepted (the kernel caps it at somaxconn)
GC_GEN0_THRESHOLD = 10_000  # allocations between young-generation collections (default 700)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec for this process, or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.1, int(usec) / 2_000_000)
    except ValueError:
        return None


class Notifier(Protocol):
    """Where the daemon reports its life: systemd itself, or the supervisor's pipe."""

    def ready(self) -> None: ...

    def alive(self, status: str) -> None:
        """Called from a task on the event loop: a blocked loop stops calling it."""
        ...

    def stopping(self) -> None: ...

    @property
    def interval(self) -> float | None:
        """Seconds between `alive` calls; None: nobody is listening."""
        ...


class SystemdNotifier:
    def __init__(self) -> None:
        self.interval = watchdog_interval() or (STATUS_INTERVAL if _notify_socket() else None)
        self._watchdog = watchdog_interval() is not None

    def ready(self) -> None:
        sd_notify("READY=1")

    def alive(self, status: str) -> None:
        sd_notify(f"WATCHDOG=1\nSTATUS={status}" if self._watchdog else f"STATUS={status}")

    def stopping(self) -> None:
        sd_notify("STOPPING=1")


def _freeze_startup_objects() -> None:
    """Exclude everything alive after start-up (modules, classes, pools: hundreds of
    thousands of objects that live as long as the process) from future collections.

    Full collections otherwise rescan them all, stalling the loop: 7 full passes of up to
    71 ms in 20 s at 1,000 members x 20 msgs/s (`scripts/bench --gc-stats`), which made
    the p99 delivery latency."""
    gc.collect()
    gc.freeze()
    # Most of a chat server's allocations are short-lived frames and dicts freed by reference
    # counting; collecting generation 0 every 700 allocations mostly rescans survivors.
    gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)


def _notify_socket() -> bool:
    return bool(os.environ.get("NOTIFY_SOCKET"))


def run(config: Config, notifier: Notifier | None = None, workers: WorkerSet | None = None
        ) -> int:
    """Serve until SIGTERM/SIGINT, reporting to `notifier` (default: systemd). `workers`: this
    process is one of the supervisor's workers, and its /metrics covers them all."""
    return uvloop.run(serve(config, notifier or SystemdNotifier(), workers))


async def _report_alive(notifier: Notifier, app: web.Application) -> None:
    interval = notifier.interval
    if interval is None:
        return
    ctx = app[CONTEXT]
    while True:
        notifier.alive(f"{len(ctx.connections)} connections")
        await asyncio.sleep(interval)


async def serve(config: Config, notifier: Notifier, workers: WorkerSet | None = None) -> int:
    server = config.server
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=server.shutdown_timeout)
    try:
        await runner.setup()
    except Exception as exc:
        log.error("start-up failed: %s", getattr(exc, "message", None) or exc)
        return 1
    metrics = app[CONTEXT].metrics
    if workers is not None and app[CONTEXT].config.metrics.enabled:
        try:
            await metrics.serve_workers(workers)
        except OSError as exc:  # the scrape still answers, for this worker alone
            log.warning("metrics of the other workers will be missing from this one's "
                        "/metrics: cannot listen on %s: %s", workers.socket(workers.worker),
                        exc.strerror or exc)
    # A reconnect storm (every client of a restarted instance at once) must queue in the
    # kernel, not overflow aiohttp's default backlog of 128 into 1 s, 3 s, 7 s SYN retries;
    # the kernel caps it at net.core.somaxconn.
    site = web.TCPSite(runner, server.host, server.port, reuse_port=server.processes > 1,
                       backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s; set [server] port or stop the other process",
                  server.host, server.port, exc.strerror or exc)
        await metrics.close_workers()
        await runner.cleanup()
        return 1
    # Handlers before READY: a SIGTERM right after start-up (systemd, or the supervisor
    # forwarding one) must shut down cleanly, not kill a process still on SIG_DFL.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload, app[CONTEXT])
    log.info("listening on http://%s:%d", server.host, server.port)
    _freeze_startup_objects()
    notifier.ready()
    alive = asyncio.create_task(_report_alive(notifier, app), name="watchdog")
    await stop.wait()
    log.info("shutting down")
    notifier.stopping()
    alive.cancel()
    await metrics.close_workers()
    await runner.cleanup()
    log.info("stopped")
    return 0
